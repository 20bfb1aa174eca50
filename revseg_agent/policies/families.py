"""What differs between the Qwen-VL model families the chain runs, in one place.

The graph, the rewards, replay and training never ask which family a policy is: they ask its
`ModelFamily` for the few facts that differ, chosen once from the checkpoint's `config.json`
(`model_type`). What differs (read in transformers 5.25's `qwen2_5_vl` / `qwen3_vl` modelling and
processing code, and the released configs):

- ViT patch (pixels one merged token covers): Qwen2.5-VL 14 (28); Qwen3-VL 16 (32).
- Video timing: Qwen2.5-VL in M-RoPE time (`t * second_per_grid * tokens_per_second`, fed as
  `second_per_grid_ts`); Qwen3-VL as text `<t seconds>` before each temporal slot, every slot at
  M-RoPE time 0 (no `second_per_grid_ts`).
- Placeholders of one video: Qwen2.5-VL one run of `<|video_pad|>`; Qwen3-VL one
  `<|vision_start|>` run `<|vision_end|>` per temporal slot.
- Round-2 boxes: Qwen2.5-VL absolute pixels of the resized image; Qwen3-VL 0-1000 on each axis.
- M-RoPE text after a visual: Qwen2.5-VL the block's largest position + 1 (transformers 5 differs
  for long videos; fixed in `mrope`); Qwen3-VL `start + max(h, w) / merge` (its slots are t = 1,
  so both rules agree; upstream is right).

Both families share the chat template's turn structure, the special tokens, the temporal patch
(2 frames), the spatial merge (2 x 2) and the module names LoRA targets: the language model's
`q_proj`/`k_proj`/`v_proj`/`o_proj` (the vision towers' attention is a fused `qkv` and `proj`,
so the recipes' targets adapt the language model alone in both; tested).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from revseg_agent.errors import CheckpointError
from revseg_agent.parsing import RELATIVE_BOX_UNITS, BoxUnits
from revseg_agent.policies.base import VideoFrames
from revseg_agent.policies.frame_layout import timestamp_metadata, video_metadata

FamilyName = Literal["qwen2.5-vl", "qwen3-vl", "qwen2-vl"]
#: How a family times the frames of a video: in M-RoPE positions, or as text timestamps.
VideoTiming = Literal["mrope", "timestamps"]


@dataclass(frozen=True)
class ModelFamily:
    """The facts the chain needs about one Qwen-VL family (see the module table)."""

    name: FamilyName
    model_types: tuple[str, ...]
    patch_size: int
    box_units: BoxUnits
    video_timing: VideoTiming
    merge_size: int = 2
    temporal_patch_size: int = 2

    @property
    def pixels_per_token_side(self) -> int:
        """Side in pixels of what one merged visual token covers (28 or 32): resized images and
        frames are multiples of it."""
        return self.patch_size * self.merge_size

    def model_sizes(self, grids: list[list[int]]) -> list[tuple[int, int]]:
        """`(height, width)` each visual was resized to, from the processor's patch grids."""
        return [(int(h) * self.patch_size, int(w) * self.patch_size) for _, h, w in grids]

    def answer_space(self, model_size: tuple[int, int]) -> tuple[int, int]:
        """The `(height, width)` a round-2 box of an image fed at `model_size` is written in:
        the image's own pixels (Qwen2.5-VL) or 0-1000 on each axis (Qwen3-VL)."""
        if self.box_units == "relative":
            return (RELATIVE_BOX_UNITS, RELATIVE_BOX_UNITS)
        return model_size

    @property
    def feeds_second_per_grid(self) -> bool:
        """Whether the model takes `second_per_grid_ts` (its M-RoPE carries the time)."""
        return self.video_timing == "mrope"

    def video_metadata(self, clip: VideoFrames, num_frames: int | None = None) -> dict[str, Any]:
        """The timing sent with a clip as fed (to the processor, or to vLLM's loader): the fed
        rate that M-RoPE's time follows (Qwen2.5-VL), or the video's fps and the frames' own
        indices that the `<t seconds>` are written from (Qwen3-VL)."""
        if self.video_timing == "timestamps":
            return timestamp_metadata(clip, num_frames)
        return video_metadata(clip, num_frames)

    @property
    def processor_resizes(self) -> bool:
        """Whether the processor is left to resize what qwen-vl-utils already sized (Qwen2.5-VL,
        as before; idempotent there). Qwen3-VL's recipe (qwen-vl-utils' README) passes
        `do_resize=False`."""
        return self.video_timing == "mrope"

    @property
    def frame_runs_per_slot(self) -> bool:
        """Whether a video's placeholder tokens are one run per temporal slot (separated by
        timestamp text) rather than one run for the whole video."""
        return self.video_timing == "timestamps"


QWEN2_5_VL = ModelFamily(
    name="qwen2.5-vl",
    model_types=("qwen2_5_vl",),
    patch_size=14,
    box_units="pixels",
    video_timing="mrope",
)
QWEN3_VL = ModelFamily(
    name="qwen3-vl",
    model_types=("qwen3_vl", "qwen3_vl_moe"),
    patch_size=16,
    box_units="relative",
    video_timing="timestamps",
)
#: Qwen2-VL runs as Qwen2.5-VL but writes 0-1000 boxes (its `<|box_start|>(x1,y1),(x2,y2)` form).
QWEN2_VL = ModelFamily(
    name="qwen2-vl",
    model_types=("qwen2_vl",),
    patch_size=14,
    box_units="relative",
    video_timing="mrope",
)
FAMILIES: tuple[ModelFamily, ...] = (QWEN2_5_VL, QWEN3_VL, QWEN2_VL)
FAMILY_NAMES: tuple[FamilyName, ...] = tuple(f.name for f in FAMILIES)


def family_for_model_type(model_type: str) -> ModelFamily:
    """The family of a checkpoint whose `config.json` says `model_type`."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise CheckpointError(f"a {model_type!r} model is not a family the chain runs (known: {known})")


def family_named(name: str) -> ModelFamily:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(FAMILY_NAMES)}")


def family_of_config(config: Any) -> ModelFamily:
    """The family of a loaded model's config (a `PretrainedConfig` or its dict)."""
    model_type = (
        config.get("model_type") if isinstance(config, Mapping) else getattr(config, "model_type", None)
    )
    return family_for_model_type(str(model_type))


def family_of_processor(processor: Any) -> ModelFamily:
    """The family a processor prepares inputs for (its class, else its patch size)."""
    name = type(processor).__name__
    if name.startswith("Qwen3VL"):
        return QWEN3_VL
    if name.startswith(("Qwen2_5_VL", "Qwen2VL")):
        return QWEN2_5_VL
    patch = int(getattr(getattr(processor, "image_processor", None), "patch_size", 14) or 14)
    return QWEN3_VL if patch == QWEN3_VL.patch_size else QWEN2_5_VL


def family_of_checkpoint(name_or_path: str | Path, *, revision: str | None = None) -> ModelFamily:
    """The family of a local folder (its `config.json`) or hub id (configs only, no weights)."""
    path = Path(name_or_path).expanduser() / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
        return family_of_config(config)
    from transformers import AutoConfig

    return family_of_config(AutoConfig.from_pretrained(str(name_or_path), revision=revision))
