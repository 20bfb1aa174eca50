"""Write a run's outputs: per-frame PNG masks, COCO RLE JSON, an overlay video and the trace.

Everything is assembled in a temporary folder beside the destination and renamed into place in
one step, so a crash never leaves a half-written output folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2

from revseg_agent.graphs.traces import Trace
from revseg_agent.io import atomic_output_dir
from revseg_agent.masks_io import Masks, overlay_frame, write_png_masks
from revseg_agent.types import Box
from revseg_agent.video import Video

logger = logging.getLogger(__name__)

#: FourCC of the overlay video; `mp4v` is written by every OpenCV build (no external FFmpeg).
OVERLAY_FOURCC = "mp4v"


def write_overlay_video(
    path: Path, video: Video, track: Masks, *, keyframe: int | None, boxes: list[Box] | None
) -> None:
    """Encode the overlay as a stream: one decoded frame and one mask in memory at a time."""
    writer = cv2.VideoWriter(
        str(path),
        cv2.VideoWriter.fourcc(*OVERLAY_FOURCC),
        video.info.fps,
        (video.info.width, video.info.height),
    )
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    try:
        for i, frame in enumerate(video.iter_frames()):
            shown = overlay_frame(frame, track.frame(i), boxes if i == keyframe else None)
            writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def write_outputs(
    out_dir: str | Path,
    *,
    video: Video,
    track: Masks,
    trace: Trace,
    masks_json: str | Path,
    overwrite: bool = False,
) -> Path:
    """Write `masks/<00000>.png` (0/255), `masks.json`, `overlay.mp4` and `trace.json` to `out_dir`."""
    boxes = [Box.from_list(b) for b in trace.result.boxes or []]
    with atomic_output_dir(out_dir, overwrite=overwrite, kind="segment") as tmp:
        write_png_masks(tmp / "masks", (track.frame(i) for i in range(track.num_frames)))
        shutil.copyfile(masks_json, tmp / "masks.json")
        write_overlay_video(
            tmp / "overlay.mp4", video, track, keyframe=trace.result.keyframe_index, boxes=boxes
        )
        trace.save(tmp / "trace.json")
    return Path(out_dir)
