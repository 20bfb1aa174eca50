"""The `Tracker` swap point: box(es) on one frame in, a mask on every frame out.

Two ways to get the masks: `track` returns them all at once (a `MaskTrack`, one boolean array of
the whole video: fine for short clips), `stream` yields them frame by frame as they are produced
(`FrameMasks`), so a long video's masks go to disk without ever being held together. The built-in
trackers implement `stream` and derive `track` from it; a third-party tracker may implement only
`track` and `stream_masks` still works with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from revseg_agent.errors import InputError
from revseg_agent.types import Box, FrameMasks, MaskTrack
from revseg_agent.video import Video

#: Called with the number of frames just finished (usually 1), for progress bars.
ProgressCallback = Callable[[int], None]

__all__ = [
    "FrameMasks",
    "ProgressCallback",
    "StreamingTracker",
    "TrackPrompt",
    "Tracker",
    "check_prompt",
    "collect_track",
    "frames_of",
    "stream_group",
    "stream_masks",
]


@dataclass(frozen=True)
class TrackPrompt:
    """Boxes on one frame: what one expression asks a tracker to propagate."""

    frame_index: int
    boxes: tuple[Box, ...]


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


@runtime_checkable
class StreamingTracker(Tracker, Protocol):
    """A tracker that can also hand its masks over frame by frame, in the order it makes them
    (the keyframe, forward to the last frame, then backward to frame 0), every frame exactly
    once, holding only a bounded number of frames itself."""

    def stream(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> Iterator[FrameMasks]: ...


def check_prompt(video: Video, frame_index: int, boxes: Sequence[Box]) -> None:
    """The checks every tracker makes before it starts (raises `InputError`)."""
    if not boxes:
        raise InputError("the tracker needs at least one box")
    if not 0 <= frame_index < video.num_frames:
        raise InputError(f"keyframe {frame_index} is outside the video's {video.num_frames} frames")


def collect_track(frames: Iterable[FrameMasks], video: Video, num_objects: int) -> MaskTrack:
    """Gather a stream into one in-memory `MaskTrack` (frames a tracker did not yield stay empty)."""
    n, h, w = video.num_frames, video.info.height, video.info.width
    per_object = {obj: np.zeros((n, h, w), dtype=bool) for obj in range(1, num_objects + 1)}
    for frame in frames:
        for obj, mask in frame.objects.items():
            per_object[obj][frame.index] = mask
    return MaskTrack.from_objects(per_object)


def frames_of(track: MaskTrack) -> Iterator[FrameMasks]:
    """A finished `MaskTrack` as a stream, frame 0 first."""
    per_object = track.per_object or {1: track.masks}
    for i in range(track.num_frames):
        yield FrameMasks(i, {obj: stack[i] for obj, stack in per_object.items()})


def stream_masks(
    tracker: Tracker,
    video: Video,
    *,
    frame_index: int,
    boxes: Sequence[Box],
    progress: ProgressCallback | None = None,
) -> Iterator[FrameMasks]:
    """Frame-by-frame masks from any tracker: its own `stream` when it has one (bounded memory),
    else its `track` result replayed frame by frame."""
    if isinstance(tracker, StreamingTracker):
        return tracker.stream(video, frame_index=frame_index, boxes=boxes, progress=progress)
    return frames_of(tracker.track(video, frame_index=frame_index, boxes=boxes, progress=progress))


def stream_group(
    tracker: Tracker,
    video: Video,
    prompts: Sequence[TrackPrompt],
    *,
    progress: ProgressCallback | None = None,
) -> Iterator[tuple[int, FrameMasks]]:
    """Several prompts on one video, `(prompt index, FrameMasks)`: the tracker's own
    `stream_group` when it has one (SAM2: one pass, the image encoder once per frame), else each
    prompt alone, one after another."""
    own = getattr(tracker, "stream_group", None)
    if callable(own):
        yield from own(video, prompts, progress=progress)
        return
    for i, prompt in enumerate(prompts):
        for frame in stream_masks(
            tracker, video, frame_index=prompt.frame_index, boxes=prompt.boxes, progress=progress
        ):
            yield i, frame
