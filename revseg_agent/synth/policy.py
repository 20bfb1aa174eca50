"""The architecture of `revseg-tiny`: a small Qwen2.5-VL sized for the synthetic world.

Why these choices: the world's frames are 112 x 112, so one frame is 4 x 4 tokens of 28 px and a
video of 8 sampled frames is 128 tokens; its language is the chain's prompts, the queries'
phrasings, object names and numbers, so the tokenizer is a BPE fitted to exactly that, splitting
digits one at a time as Qwen's own does (a coordinate's tens digit is a coarse position the
policy can learn before its units digit); positions stay under a few
hundred, so `rope_theta` is small enough that every rotary frequency turns within them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from revseg_agent.graphs.chats import KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.parsing import format_box_answer, format_keyframe_answer
from revseg_agent.policies.base import ImageFrame, TextPart
from revseg_agent.prompts import SYSTEM_PROMPT, round2_text
from revseg_agent.synth.queries import NAMES, PHRASINGS
from revseg_agent.synth.scenes import SIZE, name_parts
from revseg_agent.types import Box

if TYPE_CHECKING:
    import torch

    from revseg_agent.policies.qwen import QwenVLPolicy

#: The policy's view of a video frame (the world's frame size: 4 x 4 tokens).
PIXELS = SIZE[0] * SIZE[1]
#: The keyframe's pixel budget for round 2: the 112 x 112 frame upscaled to 224 x 224, 8 x 8
#: tokens of 14 source pixels, as Qwen2.5-VL gives an image more tokens than a video frame.
#: Measured (`benchmarks/grounding_probe.py`, one lit shape, round 2 from scratch, 8 frames a
#: step, lr 1e-3): at 112 the box collapsed to one constant box (IoU 0.05 at 3,750 steps); at
#: 224 box IoU rose from 0.03 at 2,000 steps to 0.49 at 4,000 (47% of boxes over IoU 0.5).
KEYFRAME_PIXELS = (2 * SIZE[0]) * (2 * SIZE[1])


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is fitted to: prompts, phrasings, answers and numbers."""
    names = NAMES
    lines = [SYSTEM_PROMPT, "system user assistant"]
    for n in (4, 8, 12, 16):
        timestamps = [k * 0.5 for k in range(n)]
        for message in round1_messages("the red circle", timestamps):
            lines.append(" ".join(p.text for p in message.content if isinstance(p, TextPart)))
    for intent, templates in PHRASINGS.items():
        for template in templates:
            for k, name in enumerate(names):
                colour, shape = name_parts(name)
                other = names[(k + 5) % len(names)]
                text = template.format(name=name, colour=colour, shape=shape, hitter=other, hit=other)
                lines.append(f"The query asks for {text}. {name.capitalize()} {intent}.")
    for k, name in enumerate(names):
        lines.append(
            format_keyframe_answer(f"The query asks for {name}. It is in frame {k % 16 + 1}.", k % 16, name)
        )
        lines.append(round2_text(name))
    for v in range(SIZE[1] + 1):
        box = Box(v % 100, (v * 7) % SIZE[0], min(SIZE[1], v + 5), min(SIZE[0], v + 9))
        lines.append(format_box_answer([box], names[v % len(names)]))
        lines.append(f"{v}, {v} {v}] [{v},")
    return lines


def keyframe_tokens(policy: QwenVLPolicy, frame: np.ndarray, label: str = "the red circle") -> torch.Tensor:
    """Round 2's visual tokens of `frame` (the vision tower and merger, as the language model
    receives them), laid out on the merged patch grid `(rows, columns, width)`; call it under
    `torch.no_grad()`."""
    import torch

    inputs = policy.prepare_inputs(round2_messages(label), {KEYFRAME_REF: ImageFrame(frame)})
    feats = policy.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    feats = getattr(feats, "pooler_output", feats)
    flat = torch.cat(list(feats)) if isinstance(feats, list | tuple) else feats
    _, rows, columns = (int(v) for v in inputs["image_grid_thw"][0])
    merge = int(policy.model.config.vision_config.spatial_merge_size)
    return flat.reshape(rows // merge, columns // merge, -1)


def center_visual_tokens(policy: QwenVLPolicy, frames: list[np.ndarray]) -> None:
    """Data-dependent initialisation of the vision merger's output layer (as LSUV initialises
    layers from data): shift its bias so the visual tokens of typical frames have zero mean, and
    scale it so their spread matches the text embeddings'. Measured at random init without it:
    visual tokens 2.7x longer than text embeddings (0.60 vs 0.22); with it, as long as them and
    zero-mean over typical frames (an image's own tokens still share its floor's colour). It
    does not stop training at lr 2e-3 from growing a large common vector later (norm ~18 within
    250 steps: see the README)."""
    import torch

    merger_out = policy.model.model.visual.merger.mlp[2]
    with torch.no_grad():
        stacked = torch.cat([keyframe_tokens(policy, frame).flatten(0, 1) for frame in frames])
        merger_out.bias -= stacked.mean(0)
        spread = float((stacked - stacked.mean(0)).std())
        target = float(policy.model.get_input_embeddings().weight.std())
        merger_out.weight *= target / spread
        merger_out.bias *= target / spread


def content_channel_rope(
    theta: float, head_dim: int, mrope_section: list[int], slow: int, *, max_positions: int
) -> dict[str, object]:
    """M-RoPE parameters whose temporal section ends in `slow` near-still frequencies (1e-2,
    1e-3, ...), every other frequency as at base `theta`.

    Why: at `theta` 3 every frequency turns by >= 0.36 rad a position, so attention can match
    content only at fixed offsets; in a still image the temporal section is constant over the
    grid, but across a video's frames nothing is. Near-still frequencies are a channel where a
    query matches a key wherever it is, while height and width keep the fast frequencies that
    grounding needs (a large base, which slows them all, made it unlearnable). Written as
    transformers' `longrope` with per-frequency factors (`factor` 1, so no attention scaling):
    a plain config field that `from_pretrained` reads back.
    """
    pairs = head_dim // 2
    if sum(mrope_section) != pairs:
        raise ValueError(f"mrope_section {mrope_section} does not sum to head_dim / 2 = {pairs}")
    if not 0 <= slow <= mrope_section[0]:
        raise ValueError(f"slow must be within the temporal section's {mrope_section[0]} frequencies: {slow}")
    target = [theta ** (-2 * i / head_dim) for i in range(pairs)]
    for k, index in enumerate(range(mrope_section[0] - slow, mrope_section[0])):
        target[index] = 10.0 ** -(k + 2)
    factors = [1.0 / (t * theta ** (2 * i / head_dim)) for i, t in enumerate(target)]
    return {
        "rope_type": "longrope",
        "rope_theta": theta,
        "mrope_section": list(mrope_section),
        "short_factor": factors,
        "long_factor": factors,
        "factor": 1.0,
        "original_max_position_embeddings": max_positions,
    }


def text_content_channel_rope(
    text_config: object, slow: int, theta: float | None = None
) -> dict[str, object]:
    """`content_channel_rope` for a loaded Qwen-VL language model's config (its head size,
    sections and length), at its own base unless `theta` is given."""
    rope = text_config.rope_parameters  # type: ignore[attr-defined]
    return content_channel_rope(
        float(rope["rope_theta"] if theta is None else theta),
        text_config.hidden_size // text_config.num_attention_heads,  # type: ignore[attr-defined]
        rope["mrope_section"],
        slow,
        max_positions=text_config.max_position_embeddings,  # type: ignore[attr-defined]
    )


def set_text_rope(model: object, rope_parameters: dict[str, object]) -> None:
    """Give a loaded Qwen-VL language model new M-RoPE parameters (the weights stay; the rotary
    frequencies are recomputed and `save_pretrained` writes them into the config)."""
    config = model.config.text_config  # type: ignore[attr-defined]
    config.rope_parameters = dict(rope_parameters)
    language_model = model.model.language_model  # type: ignore[attr-defined]
    language_model.rotary_emb = type(language_model.rotary_emb)(config=config)


def build_revseg_tiny(
    out: str | Path,
    *,
    seed: int = 0,
    rope_theta: float = 3.0,
    rope_slow: int = 0,
    keyframe_pixels: int = KEYFRAME_PIXELS,
) -> Path:
    """Write the random-init `revseg-tiny` (model + processor) to `out`, its visual tokens
    centred on frames of the world (`center_visual_tokens`). Images (the keyframe) are resized
    to exactly `keyframe_pixels` (the shipped checkpoints were trained at 112 x 112);
    `rope_slow` near-still time frequencies give M-RoPE a content channel
    (`content_channel_rope`; the shipped checkpoints have none)."""
    from revseg_agent.policies.qwen import QwenVLPolicy
    from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl
    from revseg_agent.synth.scenes import render_scene

    folder = build_tiny_qwen2_5_vl(
        out,
        seed=seed,
        text_hidden=128,
        text_layers=4,
        text_heads=4,
        vision_hidden=64,
        vision_depth=2,
        vision_heads=2,
        image_min_pixels=keyframe_pixels,
        image_max_pixels=keyframe_pixels,
        video_max_pixels=PIXELS,
        tokenizer_corpus=tokenizer_corpus(),
        vocab_size=1200,
        qwen_split=True,  # digits one at a time, as Qwen's tokenizer splits them
        rope_theta=rope_theta,
    )
    policy = QwenVLPolicy.from_pretrained(str(folder), device="cpu")
    frames = [render_scene(seed * 1000 + k, num_frames=2).frames[0] for k in range(16)]
    center_visual_tokens(policy, frames)
    if rope_slow:
        set_text_rope(policy.model, text_content_channel_rope(policy.model.config.text_config, rope_slow))
    policy.model.save_pretrained(folder, safe_serialization=True)
    return folder


def grow_text_depth(model: object, *, copies: int = 1) -> int:
    """Deepen a loaded Qwen-VL language model in place without changing what it computes: after
    each decoder layer insert `copies` copies of it whose residual branches are zeroed (attention
    `o_proj` and MLP `down_proj`), so each new layer starts as the identity and the model's
    logits are unchanged (function-preserving growth, as Net2Net deepens a network).

    Why copies rather than random layers: a copy's queries and keys already attend where the
    trained layer does, so the first gradient steps into its zeroed outputs are useful ones.
    Returns the new layer count; `save_pretrained` writes it into the config."""
    import copy

    import torch

    if copies < 1:
        raise ValueError(f"copies must be at least 1: {copies}")
    config = model.config.text_config  # type: ignore[attr-defined]
    language_model = model.model.language_model  # type: ignore[attr-defined]
    grown = []
    for layer in language_model.layers:
        grown.append(layer)
        for _ in range(copies):
            twin = copy.deepcopy(layer)
            with torch.no_grad():
                twin.self_attn.o_proj.weight.zero_()
                twin.mlp.down_proj.weight.zero_()
            grown.append(twin)
    for index, layer in enumerate(grown):
        layer.self_attn.layer_idx = index
    language_model.layers = torch.nn.ModuleList(grown)
    config.num_hidden_layers = len(grown)
    if getattr(config, "layer_types", None) is not None:  # each copy keeps its layer's own type
        config.layer_types = [kind for kind in config.layer_types for _ in range(copies + 1)]
    return len(grown)
