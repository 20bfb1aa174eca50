"""The `Policy` swap point: what the graph needs from a vision-language model.

A policy turns a chat (text plus visuals referenced by name) into `n` completions and reports
what training needs to replay them: prompt token ids, completion token ids, per-token
sampling-time log-probs, and the size each image was resized to (boxes are written in it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from revseg_agent.parsing import BoxUnits


class TextPart(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["text"] = "text"
    text: str


class VisualPart(BaseModel):
    """A visual placed in a message, by reference: `ref` names an entry of the `visuals` mapping."""

    model_config = ConfigDict(frozen=True)
    type: Literal["image", "video"]
    ref: str


class ChatMessage(BaseModel):
    """One chat turn. An assistant turn the policy itself sampled may carry the sampled
    `token_ids`: a policy that can (e.g. `QwenVLPolicy`) then feeds those ids back instead of
    re-tokenising the text (token-in/token-out), which a sampled text need not survive."""

    model_config = ConfigDict(frozen=True)
    role: Literal["system", "user", "assistant"]
    content: list[TextPart | VisualPart]
    token_ids: list[int] | None = None


@dataclass(frozen=True)
class VideoFrames:
    """Sampled frames of one video with the timing the model needs (RGB uint8 `(H, W, 3)`)."""

    frames: Sequence[np.ndarray]
    frame_indices: Sequence[int]
    fps: float
    total_num_frames: int
    #: Seconds between consecutive frames; None: derived from `frame_indices` and `fps`
    #: (see `frame_layout.sample_interval_s`).
    sample_interval_s: float | None = None


@dataclass(frozen=True)
class ImageFrame:
    """One RGB uint8 `(H, W, 3)` image (e.g. the keyframe)."""

    pixels: np.ndarray


Visual = VideoFrames | ImageFrame


def visual_for(part: VisualPart, visuals: Mapping[str, Visual]) -> Visual:
    """The visual a message part refers to, checked to be of the kind the part says."""
    visual = visuals.get(part.ref)
    if visual is None:
        raise KeyError(f"message refers to visual {part.ref!r}, which was not given")
    if part.type == "image" and not isinstance(visual, ImageFrame):
        raise TypeError(f"visual {part.ref!r} is used as an image but is a video")
    if part.type == "video" and not isinstance(visual, VideoFrames):
        raise TypeError(f"visual {part.ref!r} is used as a video but is an image")
    return visual


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. Log-probs are of `softmax(logits / temperature)`, as TRL computes them."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    #: None: the policy's own budget (`token_budget`): what it was trained with, else the default.
    max_new_tokens: int | None = None
    seed: int | None = None


GREEDY = SamplingParams()
#: New tokens a round may write when neither the run nor the checkpoint says (the 7B recipes'
#: training budget: a GRPO policy's `<think>` blocks grow up to it).
DEFAULT_MAX_NEW_TOKENS = 1024


def token_budget(sampling: SamplingParams, trained: int | None = None) -> int:
    """The one rule for a round's new-token budget: the run's explicit setting, else the budget the
    policy was trained with (`max_new_tokens` in its `generation_config.json`, written by
    `revseg train`), else `DEFAULT_MAX_NEW_TOKENS`."""
    return sampling.max_new_tokens or trained or DEFAULT_MAX_NEW_TOKENS


@dataclass
class Generation:
    """One completion and what is needed to replay it for training."""

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    #: `(height, width)` of each image as the model saw it, in message order.
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    #: `(height, width)` of each video's frames as the model saw them, in message order.
    video_sizes: list[tuple[int, int]] = field(default_factory=list)


def feeds_token_ids(policy: object) -> bool:
    """Whether `policy` feeds an assistant turn's `token_ids` back instead of its text (a policy
    says so with a true `feeds_token_ids` attribute; `QwenVLPolicy` does, a served one cannot).
    The graph passes round 1's sampled ids only then, so a trace records the chat the policy saw."""
    return bool(getattr(policy, "feeds_token_ids", False))


def box_units(policy: object) -> BoxUnits:
    """How `policy`'s model family writes box coordinates (`families.ModelFamily.box_units`): a policy
    says so with a `box_units` attribute; without one, Qwen2.5-VL's absolute pixels."""
    units = getattr(policy, "box_units", "pixels")
    return "relative" if units == "relative" else "pixels"


@runtime_checkable
class Policy(Protocol):
    """A vision-language model the graph can ask. Implementations: `QwenVLPolicy`."""

    @property
    def name(self) -> str:
        """A stable identifier (hub id or path) recorded in traces."""
        ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = GREEDY,
        n: int = 1,
    ) -> list[Generation]:
        """Return `n` completions of the assistant's next turn."""
        ...
