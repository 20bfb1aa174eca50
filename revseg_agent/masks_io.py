"""Masks on disk: COCO RLE JSON (one RLE per frame), PNG folders (0/255) and overlay videos."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from revseg_agent.errors import InputError
from revseg_agent.io import atomic_write_text
from revseg_agent.types import Box, FrameMasks, MaskTrack


class MaskFileError(InputError):
    """A mask file (e.g. a prediction PNG) that cannot be read as an image."""


MASKS_FORMAT = "revseg-masks/1"


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of one boolean `(H, W)` mask, with `counts` as a str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _coco(rle: dict[str, Any]) -> dict[str, Any]:
    """An RLE as pycocotools takes it (counts as bytes)."""
    counts = rle["counts"]
    data = counts.encode("ascii") if isinstance(counts, str) else counts
    return {"size": list(rle["size"]), "counts": data}


def rle_area(rle: dict[str, Any]) -> int:
    """Foreground pixels of a COCO RLE, counted from its runs (nothing decoded)."""
    return int(mask_utils.area(_coco(rle)))


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    return mask_utils.decode(_coco(rle)).astype(bool)


@dataclass
class RleMaskTrack:
    """A whole video's masks kept as COCO RLE (a few hundred bytes a frame instead of H x W),
    decoded one frame at a time. What streamed tracking produces and `read_masks_json` returns;
    `masks` / `per_object` still give the dense stacks for callers that want them (short clips).
    """

    height: int
    width: int
    frames: list[dict[str, Any]]
    #: Per-object RLEs by object id; empty when there is a single object (its masks are `frames`).
    objects: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        """The (union) mask of one frame, decoded."""
        return decode_rle(self.frames[index])

    def object_frame(self, obj: int, index: int) -> np.ndarray:
        return decode_rle(self.objects[obj][index]) if self.objects else self.frame(index)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_frames):
            yield self.frame(i)

    @property
    def masks(self) -> np.ndarray:
        """Every frame decoded into one `(frames, H, W)` array (memory grows with the video)."""
        if not self.frames:
            return np.zeros((0, self.height, self.width), bool)
        return np.stack(list(self))

    @property
    def per_object(self) -> dict[int, np.ndarray]:
        if not self.objects:
            return {1: self.masks}
        return {obj: np.stack([decode_rle(r) for r in rles]) for obj, rles in sorted(self.objects.items())}

    @classmethod
    def from_dense(cls, track: MaskTrack) -> RleMaskTrack:
        _, h, w = track.masks.shape
        objects = (
            {obj: [encode_rle(m) for m in stack] for obj, stack in sorted(track.per_object.items())}
            if len(track.per_object) > 1
            else {}
        )
        return cls(int(h), int(w), [encode_rle(m) for m in track.masks], objects)


#: Anything that gives one frame's mask by index (`frame(i)`, `num_frames`; `masks` for the
#: whole stack): a dense `MaskTrack` or an `RleMaskTrack`.
Masks = MaskTrack | RleMaskTrack


class MaskStreamWriter:
    """Encodes masks as a tracker yields them (any frame order), so no dense stack is ever held.

    `add` each `FrameMasks`; `track()` gives the `RleMaskTrack` (every frame must have come);
    `write_json` writes it atomically. `png_dir`, if given, also receives each frame's union mask
    as `<index, 5 digits>.png` the moment it arrives (that folder belongs to the caller's
    atomic output folder).
    """

    def __init__(self, num_frames: int, height: int, width: int, *, png_dir: Path | None = None) -> None:
        self.num_frames, self.height, self.width = num_frames, height, width
        self.png_dir = png_dir
        self._frames: list[dict[str, Any] | None] = [None] * num_frames
        self._objects: dict[int, list[dict[str, Any] | None]] = {}
        self.empty_frames = 0
        self.area_sum = 0.0

    def add(self, frame: FrameMasks) -> np.ndarray:
        """Encode one frame; returns its union mask (for a caller's own per-frame use)."""
        if not 0 <= frame.index < self.num_frames:
            raise ValueError(f"frame {frame.index} is outside the video's {self.num_frames} frames")
        union = frame.union
        if union.shape != (self.height, self.width):
            raise ValueError(f"mask of shape {union.shape} for a {self.width}x{self.height} video")
        if self._frames[frame.index] is None:
            area = float(union.mean())
            self.area_sum += area
            self.empty_frames += area == 0
        self._frames[frame.index] = encode_rle(union)
        if len(frame.objects) > 1 or self._objects:
            for obj, mask in frame.objects.items():
                self._objects.setdefault(obj, [None] * self.num_frames)[frame.index] = encode_rle(mask)
        if self.png_dir is not None:
            write_mask_png(self.png_dir / f"{frame.index:05d}.png", union)
        return union

    def track(self) -> RleMaskTrack:
        missing = [i for i, f in enumerate(self._frames) if f is None]
        if missing:
            raise ValueError(f"the tracker gave no mask for {len(missing)} frame(s), first {missing[0]}")
        objects = {obj: [r for r in rles if r is not None] for obj, rles in self._objects.items()}
        return RleMaskTrack(self.height, self.width, [f for f in self._frames if f is not None], objects)

    def write_json(self, path: str | Path, **meta: Any) -> Path:
        return write_masks_json(path, self.track(), **meta)


def write_masks_json(path: str | Path, track: MaskTrack | RleMaskTrack, **meta: Any) -> Path:
    """Write `{"format", "height", "width", "num_frames", "frames": [{"frame_index", "rle"}], **meta}`
    (plus `"objects": {id: [rle, ...]}` when there are several objects)."""
    rle = track if isinstance(track, RleMaskTrack) else RleMaskTrack.from_dense(track)
    doc = {
        "format": MASKS_FORMAT,
        "height": rle.height,
        "width": rle.width,
        "num_frames": rle.num_frames,
        **meta,
        "frames": [{"frame_index": i, "rle": r} for i, r in enumerate(rle.frames)],
        "objects": {str(obj): rles for obj, rles in sorted(rle.objects.items())},
    }
    return atomic_write_text(path, json.dumps(doc))


def read_masks_json(path: str | Path) -> RleMaskTrack:
    """A masks file as an `RleMaskTrack` (frames decoded only when asked for)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("format") != MASKS_FORMAT:
        raise ValueError(f"{path} is not a {MASKS_FORMAT} file")
    frames = [f["rle"] for f in sorted(doc["frames"], key=lambda f: f["frame_index"])]
    objects = {int(k): v for k, v in doc.get("objects", {}).items()}
    return RleMaskTrack(int(doc["height"]), int(doc["width"]), frames, objects)


def read_mask_png(path: Path) -> np.ndarray:
    """A binary mask PNG: non-zero is foreground (0/1, 0/255 and palette files alike)."""
    try:
        with Image.open(path) as im:
            if im.mode in {"P", "L", "1", "I", "I;16"}:
                return np.array(im) > 0
            return np.array(im.convert("L")) > 0
    except (UnidentifiedImageError, OSError) as exc:
        raise MaskFileError(f"mask {path} is not a readable image: {exc}") from exc


def write_mask_png(path: Path, mask: np.ndarray, *, value: int = 255) -> None:
    """A binary mask as a PNG of 0 and `value` (255 by default; ReVOS's official code wants 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), mask.astype(np.uint8) * np.uint8(value)):
        raise OSError(f"cannot write {path}")


def write_png_masks(folder: str | Path, masks: Iterable[np.ndarray]) -> None:
    """One `<frame index, 5 digits>.png` per frame, 0 background / 255 object (a stack, or any
    iterable of frames, consumed one at a time)."""
    for i, m in enumerate(masks):
        write_mask_png(Path(folder) / f"{i:05d}.png", m)


#: Overlay colour (RGB) and opacity.
OVERLAY_RGB = (255, 0, 255)  # magenta: rarely the colour of the object itself
OVERLAY_ALPHA = 0.5
BOX_RGB = (255, 220, 0)  # yellow


def overlay_frame(frame: np.ndarray, mask: np.ndarray, boxes: list[Box] | None = None) -> np.ndarray:
    """The frame with the mask tinted and its outline drawn (and boxes, if given). RGB in, RGB out."""
    out = frame.copy()
    if mask.any():
        tint = np.array(OVERLAY_RGB, np.float32)
        out[mask] = (out[mask] * (1 - OVERLAY_ALPHA) + tint * OVERLAY_ALPHA).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, OVERLAY_RGB, 2)
    for box in boxes or []:
        x, y, w, h = box.to_int_xywh()
        cv2.rectangle(out, (x, y), (x + w, y + h), BOX_RGB, 2)
    return out
