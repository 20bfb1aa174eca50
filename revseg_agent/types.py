"""Core value types shared by every part of the library.

Coordinate convention (stated once, used everywhere): a `Box` is `(x1, y1, x2, y2)` in absolute
pixel coordinates of the frame it refers to, x to the right, y down, continuous coordinates in
which pixel column `i` covers `[i, i + 1)`. So a box covering the whole `W x H` frame is
`(0, 0, W, H)`. Model-space boxes (Qwen2.5-VL's resized input) are converted to frame space only
by `Box.rescale`, called from exactly one place (`parsing.to_frame_space`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates (see the module docstring)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_list(cls, values: Sequence[float]) -> Box:
        if len(values) != 4:
            raise ValueError(f"a box needs 4 numbers (x1, y1, x2, y2), got {len(values)}")
        x1, y1, x2, y2 = (float(v) for v in values)
        return cls(x1, y1, x2, y2)

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Box | None:
        """The tight box around a binary mask's foreground, or None when the mask is empty."""
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return None
        return cls(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))

    @classmethod
    def of_regions(cls, mask: np.ndarray, min_share: float = 0.01) -> list[Box]:
        """One tight box per connected region of a binary mask (8-connected), largest first;
        regions smaller than `min_share` of the largest are dropped (specks). Several targets
        merged into one mask come back as one box each, unless they touch."""
        import cv2

        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        regions = sorted(stats[1:count].tolist(), key=lambda s: -s[4])
        if not regions:
            return []
        floor = min_share * regions[0][4]
        return [
            cls(float(x), float(y), float(x + w), float(y + h)) for x, y, w, h, a in regions if a >= floor
        ]

    @classmethod
    def centre(cls, height: int, width: int) -> Box:
        """The box covering the middle half of a frame on each axis (a no-information prompt)."""
        return cls(width / 4, height / 4, 3 * width / 4, 3 * height / 4)

    @classmethod
    def hull(cls, boxes: Sequence[Box]) -> Box:
        """The smallest box containing all `boxes`."""
        return cls(
            min(b.x1 for b in boxes),
            min(b.y1 for b in boxes),
            max(b.x2 for b in boxes),
            max(b.y2 for b in boxes),
        )

    def to_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def is_degenerate(self, min_size: float = 1.0) -> bool:
        """True when the box is narrower or lower than `min_size` pixels (or inverted)."""
        return self.width < min_size or self.height < min_size

    def clip(self, width: int, height: int) -> Box:
        """The part of the box inside a `width x height` frame."""
        return Box(
            min(max(self.x1, 0.0), float(width)),
            min(max(self.y1, 0.0), float(height)),
            min(max(self.x2, 0.0), float(width)),
            min(max(self.y2, 0.0), float(height)),
        )

    def rescale(self, from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
        """Map a box from a `(height, width)` image to another `(height, width)` image."""
        sy = to_size[0] / from_size[0]
        sx = to_size[1] / from_size[1]
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_int_xywh(self) -> tuple[int, int, int, int]:
        """Integer `(x, y, w, h)` covering the box, for OpenCV APIs."""
        x1, y1 = int(np.floor(self.x1)), int(np.floor(self.y1))
        x2, y2 = int(np.ceil(self.x2)), int(np.ceil(self.y2))
        return x1, y1, max(x2 - x1, 1), max(y2 - y1, 1)


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video without decoding it."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        """`(height, width)`."""
        return (self.height, self.width)


@dataclass(frozen=True)
class FrameSample:
    """Uniformly sampled frames: position `k` in the sample is original frame `indices[k]`."""

    indices: tuple[int, ...]
    timestamps: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class MaskTrack:
    """One boolean mask per frame of the whole video, `(num_frames, height, width)`.

    Several prompted objects are merged into one mask per frame (the benchmarks score the union);
    the per-object stacks are kept in `per_object` for callers that need them.
    """

    masks: np.ndarray
    per_object: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.masks.ndim != 3:
            raise ValueError(f"masks must be (frames, height, width), got shape {self.masks.shape}")
        self.masks = self.masks.astype(bool, copy=False)

    @property
    def num_frames(self) -> int:
        return int(self.masks.shape[0])

    def frame(self, index: int) -> np.ndarray:
        """The (union) mask of one frame, `(height, width)`."""
        return self.masks[index]

    @classmethod
    def from_objects(cls, per_object: dict[int, np.ndarray]) -> MaskTrack:
        """Union the per-object stacks (all `(frames, height, width)`) into one track."""
        stacks = list(per_object.values())
        union = np.logical_or.reduce(stacks) if len(stacks) > 1 else stacks[0].astype(bool)
        return cls(union, per_object)


@dataclass(frozen=True)
class FrameMasks:
    """One frame of a tracker's output: a boolean `(H, W)` mask per prompted object (ids from 1,
    in the order of the boxes)."""

    index: int
    objects: dict[int, np.ndarray]

    @property
    def union(self) -> np.ndarray:
        """The objects' masks merged (what the benchmarks score)."""
        masks = list(self.objects.values())
        return np.logical_or.reduce(masks) if len(masks) > 1 else masks[0].astype(bool, copy=False)
