"""What a run will use from a Qwen2.5-VL or Qwen3-VL checkpoint, read from its configs (no
weights loaded).

`revseg inspect-policy HUB_ID_OR_PATH` prints it: the model family, the tokenizer's special ids,
the processor's pixel budgets and the per-frame video budget a run uses, the generation-config
fields a run overrides, the round-2 answer form and its units, the frame-to-slot layout, how
frames are timed and the M-RoPE rule, with a warning for everything that differs from the
family's release (Qwen2.5-VL-7B-Instruct; Qwen3-VL-2B/4B-Instruct).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from revseg_agent.parsing import format_box_answer, to_model_space
from revseg_agent.policies.base import DEFAULT_MAX_NEW_TOKENS
from revseg_agent.policies.families import QWEN3_VL, family_of_config
from revseg_agent.policies.frame_layout import DEFAULT_FRAME_LAYOUT, FrameLayout, check_layout, repeats
from revseg_agent.policies.qwen import DISTRIBUTION_FIELDS, neutral_generation_fields
from revseg_agent.policies.qwen_inputs import QwenInputBuilder
from revseg_agent.policies.released import (
    QWEN3_ADDED_TOKENS,
    QWEN_ADDED_TOKENS,
    RELEASED_MAX_PIXELS,
    RELEASED_MIN_PIXELS,
    RELEASED_QWEN3_VL_CONFIGS,
    RELEASED_QWEN3_VL_IMAGE_PIXELS,
    RELEASED_VOCAB_SIZE,
)
from revseg_agent.types import Box
from revseg_agent.video import DEFAULT_NUM_FRAMES

#: What a run's own sampling sets (every other distribution field is set to neutral).
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "do_sample")


@dataclass
class PolicyReport:
    name: str
    facts: dict[str, Any] = field(default_factory=dict)
    overridden: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"policy: {self.name}"]
        out += [f"  {key}: {value}" for key, value in self.facts.items()]
        if self.overridden:
            out.append("  generation config overridden on every call (checkpoint -> run):")
            out += [f"    {k}: {a!r} -> {b!r}" for k, (a, b) in self.overridden.items()]
        out += [f"warning: {w}" for w in self.warnings]
        return out


def inspect_policy(
    name_or_path: str,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    frame_layout: FrameLayout = DEFAULT_FRAME_LAYOUT,
    revision: str | None = None,
) -> PolicyReport:
    from transformers import AutoConfig, AutoProcessor, GenerationConfig

    check_layout(frame_layout)
    config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    processor = AutoProcessor.from_pretrained(name_or_path, revision=revision)
    try:
        generation = GenerationConfig.from_pretrained(name_or_path, revision=revision or "main")
    except OSError:  # no generation_config.json: transformers' defaults
        generation = GenerationConfig()
    report = PolicyReport(name=str(name_or_path))
    tokenizer = processor.tokenizer
    vision = config.vision_config
    text = getattr(config, "text_config", config)
    family = family_of_config(config)
    qwen3 = family is QWEN3_VL
    added = QWEN3_ADDED_TOKENS if qwen3 else QWEN_ADDED_TOKENS
    released_vocab = (
        RELEASED_QWEN3_VL_CONFIGS["2B"]["text_config"]["vocab_size"] if qwen3 else RELEASED_VOCAB_SIZE
    )
    released_pixels = RELEASED_QWEN3_VL_IMAGE_PIXELS if qwen3 else (RELEASED_MIN_PIXELS, RELEASED_MAX_PIXELS)

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token, _, _ in added}
    report.facts["model_type"] = config.model_type
    report.facts["family"] = family.name
    report.facts["patch (pixels a merged token covers)"] = (
        f"{family.patch_size} ({family.pixels_per_token_side})"
    )
    report.facts["special token ids"] = ", ".join(f"{t} {i}" for t, i in ids.items())
    wrong = [f"{t} is {ids[t]}, released {i}" for t, i, _ in added if ids[t] != i]
    if wrong:
        report.warnings.append("tokenizer ids differ from the release: " + "; ".join(wrong))
    report.facts["vocab_size"] = text.vocab_size
    if text.vocab_size != released_vocab:
        report.warnings.append(f"vocab_size {text.vocab_size} (released {released_vocab})")

    builder = QwenInputBuilder(processor, frame_layout=frame_layout, family=family)
    image_lo, image_hi = builder.budget("image")
    fed = num_frames * repeats(frame_layout, builder.temporal_patch_size)
    video = builder.video_budget(fed)
    report.facts["image budget (pixels)"] = f"{image_lo}..{image_hi}"
    report.facts["video budget per frame (pixels)"] = f"{video['min_pixels']}..{video['max_pixels']}"
    if (image_lo, image_hi) != released_pixels:
        report.warnings.append(
            f"image budget {image_lo}..{image_hi} differs from the release's "
            f"{released_pixels[0]}..{released_pixels[1]}"
        )

    neutral = {
        **neutral_generation_fields(),
        "top_k": None,
        "top_p": 1.0,
        "temperature": 1.0,
        "do_sample": False,
    }
    for name in (*_SAMPLING_FIELDS, *DISTRIBUTION_FIELDS):
        value = getattr(generation, name, None)
        if name in neutral and value is not None and value != neutral[name]:
            report.overridden[name] = (
                value,
                neutral[name] if name not in _SAMPLING_FIELDS else "SamplingParams",
            )

    trained = getattr(generation, "max_new_tokens", None)
    report.facts["max_new_tokens"] = (
        f"{trained} (what it was trained with: generation_config.json; runs default to it)"
        if trained
        else f"{DEFAULT_MAX_NEW_TOKENS} (not recorded in the checkpoint: revseg's default)"
    )
    slots = -(-fed // builder.temporal_patch_size)
    report.facts["frame layout"] = (
        f"{frame_layout}: {num_frames} frame ids -> {fed} frames fed -> {slots} temporal slots"
    )
    if family.video_timing == "timestamps":
        report.facts["frame timing"] = (
            "text timestamps: '<t seconds>' before each temporal slot, the frames' real times "
            "(the times round 1's prompt lists); every slot at M-RoPE time 0"
        )
    else:
        report.facts["frame timing"] = "M-RoPE time: slot * second_per_grid * tokens_per_second"
        report.facts["tokens_per_second"] = vision.tokens_per_second
    if getattr(vision, "tokens_per_second", 2) != 2 or builder.temporal_patch_size != 2:
        report.warnings.append("tokens_per_second or temporal_patch_size differ from the release (2, 2)")
    # the box of the middle half of a 640 x 480 frame as this family writes it (fed at 640 x 480)
    example = to_model_space(
        [Box(160, 120, 480, 360)], units=family.box_units, model_size=(480, 640), frame_size=(480, 640)
    )
    report.facts["round-2 box units"] = (
        "0-1000 on each axis, whatever the image size"
        if family.box_units == "relative"
        else "absolute pixels of the resized keyframe"
    )
    report.facts["round-2 answer (strict form)"] = format_box_answer(example, "the dog")
    report.facts["M-RoPE after a video"] = _rope_rule(config)
    return report


def _rope_rule(config: Any) -> str:
    """Which rule the installed transformers follows, probed on this config's model built on
    the meta device (no memory, no weights)."""
    import torch
    from transformers import Qwen2_5_VLModel

    from revseg_agent.policies.mrope import upstream_is_reference

    if config.model_type in QWEN3_VL.model_types:
        return "transformers' own (each temporal slot is its own t = 1 block, where both rules agree)"
    if config.model_type != "qwen2_5_vl":
        return "not checked (not a Qwen2.5-VL config)"
    with torch.device("meta"):
        module = Qwen2_5_VLModel(config)
    if upstream_is_reference(module):
        return "transformers' own (it follows the released rule)"
    return "released rule (largest vision position + 1), installed over transformers' own"
