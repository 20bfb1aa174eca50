"""A weight-free tracker (OpenCV), so the whole pipeline runs offline on a CPU.

Box propagation: OpenCV's CSRT correlation-filter tracker, started on the keyframe and run
forward and backward. Mask per frame: GrabCut inside the tracked box. Both run on frames
downscaled to `work_size` pixels on the long side, which is what makes it fast (GrabCut's cost
grows with the pixel count) without losing much accuracy at DAVIS resolution; masks are
upsampled back to the frame size. `benchmarks/classical_tracker_davis.py` measures it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from revseg_agent.tools.base import ProgressCallback, check_prompt
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassicalTrackerConfig:
    #: Long side, in pixels, of the frames the tracker and GrabCut work on.
    work_size: int = 320
    #: GrabCut iterations per frame.
    grabcut_iterations: int = 2
    #: The GrabCut rectangle is the tracked box grown by this fraction of its size on each side.
    box_margin: float = 0.05
    #: Reuse the keyframe's colour models on the other frames (steadier than re-learning per frame).
    reuse_colour_models: bool = True


def _create_csrt() -> cv2.Tracker:
    if hasattr(cv2, "TrackerCSRT_create"):
        return cv2.TrackerCSRT_create()
    if hasattr(cv2, "TrackerCSRT"):
        return cv2.TrackerCSRT.create()
    legacy = getattr(cv2, "legacy", None)
    if legacy is not None and hasattr(legacy, "TrackerCSRT_create"):
        return legacy.TrackerCSRT_create()
    raise ImportError(
        "OpenCV's CSRT tracker is missing: install opencv-contrib-python-headless "
        "(and not opencv-python-headless beside it: both write the same cv2/ folder)"
    )


class ClassicalTracker:
    """CSRT box tracking both ways from the keyframe + GrabCut inside the box on every frame."""

    def __init__(self, config: ClassicalTrackerConfig | None = None) -> None:
        self.config = config or ClassicalTrackerConfig()

    @property
    def name(self) -> str:
        return "classical"

    def work_units(self, video: Video) -> int:
        return video.num_frames

    def _scale(self, video: Video) -> float:
        return min(1.0, self.config.work_size / max(video.info.width, video.info.height))

    def track(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> MaskTrack:
        check_prompt(video, frame_index, boxes)
        scale = self._scale(video)
        h, w = video.info.height, video.info.width
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = [
            cv2.resize(f, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else f
            for f in video.iter_frames()
        ]
        n = len(small)
        objects = []
        for box in boxes:
            small_box = box.rescale((h, w), (sh, sw)).clip(sw, sh)
            track_boxes = self._track_boxes(small, frame_index, small_box)
            key_mask, key_models = self._grabcut(
                small[frame_index], track_boxes[frame_index] or small_box, None
            )
            objects.append((track_boxes, key_mask, key_models if self.config.reuse_colour_models else None))
        per_object = {obj: np.zeros((n, h, w), dtype=bool) for obj in range(1, len(boxes) + 1)}
        for i, frame in enumerate(small):
            for obj_id, (track_boxes, key_mask, models) in enumerate(objects, start=1):
                box_i = track_boxes[i]
                if box_i is None or box_i.is_degenerate():
                    continue
                mask = key_mask if i == frame_index else self._grabcut(frame, box_i, models)[0]
                per_object[obj_id][i] = _upsample(mask, (h, w))
            if progress is not None:
                progress(1)
        return MaskTrack.from_objects(per_object)

    def _track_boxes(self, frames: list[np.ndarray], key: int, box: Box) -> list[Box | None]:
        """The box on every frame (None where CSRT lost the object)."""
        out: list[Box | None] = [None] * len(frames)
        out[key] = box
        for order in (range(key + 1, len(frames)), range(key - 1, -1, -1)):
            tracker = _create_csrt()
            tracker.init(cv2.cvtColor(frames[key], cv2.COLOR_RGB2BGR), box.to_int_xywh())
            for i in order:
                ok, (x, y, bw, bh) = tracker.update(cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))
                out[i] = Box(x, y, x + bw, y + bh) if ok and bw > 0 and bh > 0 else None
        return out

    def _grabcut(
        self,
        frame: np.ndarray,
        box: Box,
        models: tuple[np.ndarray, np.ndarray] | None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        fh, fw = frame.shape[:2]
        m = self.config.box_margin
        grown = Box(
            box.x1 - m * box.width, box.y1 - m * box.height, box.x2 + m * box.width, box.y2 + m * box.height
        ).clip(fw, fh)
        x, y, bw, bh = grown.to_int_xywh()
        bw, bh = min(bw, fw - x), min(bh, fh - y)
        mask = np.full((fh, fw), cv2.GC_BGD, np.uint8)
        mask[y : y + bh, x : x + bw] = cv2.GC_PR_FGD
        if bw < 2 or bh < 2 or bw * bh >= fw * fh:
            # GrabCut needs background pixels to learn from; a full-frame box has none.
            return mask == cv2.GC_PR_FGD, models or (np.zeros((1, 65)), np.zeros((1, 65)))
        bgd, fgd = (models[0].copy(), models[1].copy()) if models else (np.zeros((1, 65)), np.zeros((1, 65)))
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        mode = cv2.GC_EVAL if models is not None else cv2.GC_INIT_WITH_MASK
        try:
            cv2.grabCut(bgr, mask, (0, 0, 0, 0), bgd, fgd, self.config.grabcut_iterations, mode)
        except cv2.error:
            logger.debug("GrabCut failed on a %dx%d box; using the box as the mask", bw, bh)
            return mask == cv2.GC_PR_FGD, models or (bgd, fgd)
        fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        return fg, (bgd, fgd)


def _upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to `(height, width)` with bilinear interpolation, thresholded at 0.5."""
    if mask.shape == size:
        return mask
    up = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return up >= 0.5
