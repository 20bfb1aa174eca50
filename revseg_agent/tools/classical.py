"""A weight-free tracker (OpenCV), so the whole pipeline runs offline on a CPU.

Per object, starting on the keyframe and walking forward, then backward:
1. OpenCV's CSRT correlation-filter tracker moves the box to the next frame;
2. the previous frame's mask, shifted by the box's motion, is the shape prior: GrabCut starts
   from it as "probably foreground", the rest of the region as "probably background";
3. GrabCut's region is the CSRT box united with the shifted mask's box (so an object that grows
   or that CSRT under-sizes is still covered), grown by `box_margin`;
4. GrabCut uses the colour models learned on the keyframe (re-learning them per frame drifts).
Everything runs on frames downscaled to `work_size` pixels on the long side (GrabCut's cost grows
with the pixel count); masks are upsampled back. `benchmarks/classical_tracker_davis.py`
measures it against the plain CSRT-box + per-frame GrabCut variant (`mask_prior=False`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from revseg_agent.tools.base import FrameMasks, ProgressCallback, check_prompt, collect_track
from revseg_agent.tools.frame_store import FrameStoreKind, open_frame_store
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video

logger = logging.getLogger(__name__)

Models = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ClassicalTrackerConfig:
    #: Long side, in pixels, of the frames the tracker and GrabCut work on.
    work_size: int = 320
    #: GrabCut iterations on each propagated frame.
    grabcut_iterations: int = 2
    #: GrabCut iterations on the keyframe, where the colour models are learned once.
    keyframe_iterations: int = 5
    #: GrabCut's region is the box grown by this fraction of its size on each side.
    box_margin: float = 0.1
    #: Start GrabCut from the previous mask shifted by the box motion (off: from the box alone).
    mask_prior: bool = True
    #: A mask covering less than this share of its box is not trusted as the next prior.
    min_prior_fill: float = 0.2
    #: Where the frames before the keyframe wait for the backward pass: "disk" (a temporary
    #: file; memory stays flat however long the video) or "memory" (faster on short clips).
    #: Both give the same masks.
    frame_store: FrameStoreKind = "disk"
    #: Seed of OpenCV's random generator (GrabCut's colour-model initialisation draws from it),
    #: set at the start of every call so the masks do not depend on what ran before.
    seed: int = 0


def _create_csrt() -> cv2.Tracker:
    if hasattr(cv2, "TrackerCSRT"):
        return cv2.TrackerCSRT.create()
    legacy = getattr(cv2, "legacy", None)
    if legacy is not None and hasattr(legacy, "TrackerCSRT_create"):
        return legacy.TrackerCSRT_create()
    raise ImportError(
        "OpenCV's CSRT tracker is missing: install opencv-contrib-python-headless "
        "(and not opencv-python-headless beside it: both write the same cv2/ folder)"
    )


#: CSRT cannot start on a template narrower or lower than a few pixels (OpenCV asserts in
#: `resize`: measured with 1-2 px boxes, more often at a frame's edge); its box starts at least
#: this big, centred on the object's and kept inside the frame. The object's own box is unchanged.
MIN_CSRT_SIDE = 8


def _csrt_start_box(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """`(x, y, w, h)` for CSRT's `init`: `box` grown to `MIN_CSRT_SIDE` where it is smaller."""
    x, y, w, h = box.to_int_xywh()
    side_w, side_h = min(max(w, MIN_CSRT_SIDE), width), min(max(h, MIN_CSRT_SIDE), height)
    cx, cy = x + w / 2, y + h / 2
    x = int(min(max(round(cx - side_w / 2), 0), width - side_w))
    y = int(min(max(round(cy - side_h / 2), 0), height - side_h))
    return x, y, side_w, side_h


def _upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask to `(height, width)` with bilinear interpolation, thresholded at 0.5."""
    if mask.shape == size:
        return mask
    up = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return up >= 0.5


def _shift(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    moved = cv2.warpAffine(
        mask.astype(np.uint8),
        np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32),
        (mask.shape[1], mask.shape[0]),
        flags=cv2.INTER_NEAREST,
    )
    return moved.astype(bool)


def _centre(b: Box) -> tuple[float, float]:
    return (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2


@dataclass
class _Walk:
    """One direction of propagation: a CSRT tracker per object started on the keyframe, and
    each object's last mask and box."""

    trackers: list[cv2.Tracker]
    prev: list[tuple[np.ndarray, Box]]

    @classmethod
    def start(
        cls, key_frame: np.ndarray, key_boxes: list[Box], key_state: list[tuple[np.ndarray, Models]]
    ) -> _Walk:
        trackers = []
        for box in key_boxes:
            tracker = _create_csrt()
            tracker.init(key_frame, _csrt_start_box(box, key_frame.shape[1], key_frame.shape[0]))
            trackers.append(tracker)
        prev = [(mask, box) for (mask, _), box in zip(key_state, key_boxes, strict=True)]
        return cls(trackers, prev)


class ClassicalTracker:
    """CSRT box tracking + GrabCut with a shape prior, both ways from the keyframe."""

    def __init__(self, config: ClassicalTrackerConfig | None = None) -> None:
        self.config = config or ClassicalTrackerConfig()

    @property
    def name(self) -> str:
        return "classical"

    def work_units(self, video: Video) -> int:
        return video.num_frames

    def track(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> MaskTrack:
        frames = self.stream(video, frame_index=frame_index, boxes=boxes, progress=progress)
        return collect_track(frames, video, len(boxes))

    def stream(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> Iterator[FrameMasks]:
        """Masks frame by frame: the keyframe, forward to the end, then backward to frame 0.

        The video is decoded once, in order; the frames before the keyframe (needed last, in
        reverse) go to the frame store, so with `frame_store="disk"` memory does not grow with
        the video's length."""
        check_prompt(video, frame_index, boxes)
        # OpenCV's generator is per thread and shared with any other OpenCV code on it: seed it
        # per call, so the same video and boxes give the same masks whatever ran before.
        cv2.setRNGSeed(self.config.seed)
        h, w = video.info.height, video.info.width
        scale = min(1.0, self.config.work_size / max(w, h))
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))

        def small(frame: np.ndarray) -> np.ndarray:
            resized = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else frame
            return cv2.cvtColor(resized, cv2.COLOR_RGB2BGR)

        key_boxes = [b.rescale((h, w), (sh, sw)).clip(sw, sh) for b in boxes]
        store = open_frame_store(self.config.frame_store)
        try:
            key_frame: np.ndarray | None = None
            key_state: list[tuple[np.ndarray, Models]] = []
            walk: _Walk | None = None
            for i, frame in enumerate(video.iter_frames()):
                if i < frame_index:
                    store.append(small(frame))
                    continue
                current = small(frame)
                if i == frame_index:
                    key_frame = current
                    masks = {}
                    for obj, box in enumerate(key_boxes, start=1):
                        iterations = self.config.keyframe_iterations
                        mask, models = self._grabcut(current, box, None, None, iterations)
                        masks[obj] = _upsample(mask, (h, w))
                        key_state.append((mask, models))
                    walk = _Walk.start(current, key_boxes, key_state)
                    yield FrameMasks(i, masks)
                else:
                    assert walk is not None
                    yield FrameMasks(i, self._frame(current, walk, key_state, (h, w)))
                if progress is not None:
                    progress(1)
            assert key_frame is not None
            walk = _Walk.start(key_frame, key_boxes, key_state)
            for i in range(frame_index - 1, -1, -1):
                yield FrameMasks(i, self._frame(store[i], walk, key_state, (h, w)))
                if progress is not None:
                    progress(1)
        finally:
            store.close()

    def _frame(
        self,
        frame: np.ndarray,
        walk: _Walk,
        key_state: list[tuple[np.ndarray, Models]],
        size: tuple[int, int],
    ) -> dict[int, np.ndarray]:
        """Every object's mask on one frame (empty where CSRT lost the object)."""
        masks = {}
        for k, tracker in enumerate(walk.trackers):
            found = self._step(frame, tracker, walk.prev, k, key_state[k][1])
            masks[k + 1] = _upsample(found, size) if found is not None else np.zeros(size, dtype=bool)
        return masks

    def _step(
        self,
        frame: np.ndarray,
        tracker: cv2.Tracker,
        prev: list[tuple[np.ndarray, Box]],
        k: int,
        models: Models,
    ) -> np.ndarray | None:
        """One frame of one object; updates `prev[k]`. None where CSRT lost the object."""
        ok, (x, y, bw, bh) = tracker.update(frame)
        if not ok or bw <= 0 or bh <= 0:
            return None
        box = Box(x, y, x + bw, y + bh)
        prev_mask, prev_box = prev[k]
        prior = None
        region = box
        if self.config.mask_prior:
            (cx, cy), (px, py) = _centre(box), _centre(prev_box)
            prior = _shift(prev_mask, cx - px, cy - py)
            prior_box = Box.from_mask(prior)
            region = box if prior_box is None else Box.hull([box, prior_box])
        mask, _ = self._grabcut(frame, region, prior, models, self.config.grabcut_iterations)
        keep = mask if mask.sum() > self.config.min_prior_fill * box.area else prev_mask
        prev[k] = (keep, box)
        return mask

    def _grabcut(
        self,
        bgr: np.ndarray,
        box: Box,
        prior: np.ndarray | None,
        models: Models | None,
        iterations: int,
    ) -> tuple[np.ndarray, Models]:
        """GrabCut in `box` grown by the margin; `prior` marks probable foreground inside it."""
        fh, fw = bgr.shape[:2]
        m = self.config.box_margin
        grown = Box(
            box.x1 - m * box.width, box.y1 - m * box.height, box.x2 + m * box.width, box.y2 + m * box.height
        ).clip(fw, fh)
        x, y, bw, bh = grown.to_int_xywh()
        bw, bh = min(bw, fw - x), min(bh, fh - y)
        mask = np.full((fh, fw), cv2.GC_BGD, np.uint8)
        mask[y : y + bh, x : x + bw] = cv2.GC_PR_FGD if prior is None else cv2.GC_PR_BGD
        if prior is not None:
            inside = np.zeros((fh, fw), bool)
            inside[y : y + bh, x : x + bw] = True
            mask[prior & inside] = cv2.GC_PR_FGD
        empty: Models = (np.zeros((1, 65)), np.zeros((1, 65)))
        if bw < 2 or bh < 2 or bw * bh >= fw * fh:
            # GrabCut needs background pixels to learn from; a full-frame box has none.
            return mask == cv2.GC_PR_FGD, models or empty
        bgd, fgd = (models[0].copy(), models[1].copy()) if models else empty
        mode = cv2.GC_EVAL if models is not None else cv2.GC_INIT_WITH_MASK
        try:
            cv2.grabCut(bgr, mask, (0, 0, 0, 0), bgd, fgd, iterations, mode)
        except cv2.error:
            logger.debug("GrabCut failed on a %dx%d region; using the region as the mask", bw, bh)
            return mask == cv2.GC_PR_FGD, models or (bgd, fgd)
        return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), (bgd, fgd)
