"""The `Tracker` swap point: box(es) on one frame in, a mask on every frame out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from revseg_agent.errors import InputError
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video

#: Called with the number of frames just finished (usually 1), for progress bars.
ProgressCallback = Callable[[int], None]


@runtime_checkable
class Tracker(Protocol):
    """Propagates boxes given on `frame_index` forward and backward through the whole video.

    One call is one session: an adapter opens and closes whatever state it needs (SAM2's
    `init_state` / `reset_state`), so a tracker object can be reused across videos.
    """

    @property
    def name(self) -> str: ...

    def track(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> MaskTrack:
        """Masks for every frame of `video` (union over the boxes, plus per-object stacks)."""
        ...

    def work_units(self, video: Video) -> int:
        """How many progress units `track` reports for this video (for a progress bar's total)."""
        ...


def check_prompt(video: Video, frame_index: int, boxes: Sequence[Box]) -> None:
    """The checks every tracker makes before it starts (raises `InputError`)."""
    if not boxes:
        raise InputError("the tracker needs at least one box")
    if not 0 <= frame_index < video.num_frames:
        raise InputError(f"keyframe {frame_index} is outside the video's {video.num_frames} frames")
