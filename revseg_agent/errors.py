"""Typed errors. Every failure a user can cause has its own class and a message naming the problem."""

from __future__ import annotations

import sys


class RevsegError(Exception):
    """Base class for errors raised by revseg-agent."""


class VideoError(RevsegError):
    """The video is missing, unreadable, empty, or a requested frame does not exist."""


class InputError(RevsegError):
    """A user-supplied argument is invalid (empty query, bad frame count, ...)."""


class CheckpointError(RevsegError):
    """A model checkpoint does not exist or does not match its configuration."""


class ResourceError(RevsegError):
    """The machine ran out of something a model needs (e.g. GPU memory)."""


class PipelineFailure(RevsegError):
    """The reasoning chain ended without a result; the trace holds the per-step errors."""

    def __init__(self, message: str, *, node: str, code: str) -> None:
        super().__init__(message)
        self.node = node
        self.code = code


#: The error code a run's state carries when a node ran out of memory.
OUT_OF_MEMORY = "out_of_memory"
#: What to turn, by where memory ran out (a node of the chain, or a command's own work).
MEMORY_KNOBS = {
    "sample_frames": "a shorter or lower-resolution video",
    "semantic_interpretation": "fewer sampled frames (--frames) or a lower video pixel budget "
    "(video_max_pixels / total_pixels in the checkpoint's preprocessor config)",
    "spatial_grounding": "a lower keyframe pixel budget (max_pixels in the checkpoint's preprocessor config)",
    "track": "a lower SAM2 input size (--sam2-image-size 512), a smaller SAM2 (sam2.1_hiera_t), "
    "or the classical tracker",
    "rollouts": "smaller group_size, prompts_per_step, max_new_tokens or num_frames in the recipe, "
    "gradient_checkpointing or DeepSpeed (check with `revseg train plan`)",
}
_ANY_KNOB = "fewer --frames, a lower pixel budget, --sam2-image-size 512, or a larger GPU"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch's out-of-memory error (checked without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def out_of_memory_message(where: str, exc: BaseException | None = None) -> str:
    """One line: where memory ran out, and the knob to turn there."""
    detail = f" ({str(exc).splitlines()[0][:200]})" if exc is not None and str(exc) else ""
    return f"out of GPU memory in {where}{detail}: try {MEMORY_KNOBS.get(where, _ANY_KNOB)}"
