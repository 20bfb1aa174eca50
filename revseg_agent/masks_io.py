"""Masks on disk: COCO RLE JSON (one RLE per frame), PNG folders (0/255) and overlay videos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from revseg_agent.errors import InputError
from revseg_agent.io import atomic_write_text
from revseg_agent.types import Box, MaskTrack


class MaskFileError(InputError):
    """A mask file (e.g. a prediction PNG) that cannot be read as an image."""


MASKS_FORMAT = "revseg-masks/1"


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of one boolean `(H, W)` mask, with `counts` as a str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    counts = rle["counts"]
    data = {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    return mask_utils.decode(data).astype(bool)


def write_masks_json(path: str | Path, track: MaskTrack, **meta: Any) -> Path:
    """Write `{"format", "height", "width", "num_frames", "frames": [{"frame_index", "rle"}], **meta}`."""
    n, h, w = track.masks.shape
    doc = {
        "format": MASKS_FORMAT,
        "height": int(h),
        "width": int(w),
        "num_frames": int(n),
        **meta,
        "frames": [{"frame_index": i, "rle": encode_rle(m)} for i, m in enumerate(track.masks)],
        "objects": {
            str(obj): [encode_rle(m) for m in stack] for obj, stack in sorted(track.per_object.items())
        }
        if len(track.per_object) > 1
        else {},
    }
    return atomic_write_text(path, json.dumps(doc))


def read_masks_json(path: str | Path) -> MaskTrack:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("format") != MASKS_FORMAT:
        raise ValueError(f"{path} is not a {MASKS_FORMAT} file")
    frames = sorted(doc["frames"], key=lambda f: f["frame_index"])
    masks = np.stack([decode_rle(f["rle"]) for f in frames])
    per_object = {int(k): np.stack([decode_rle(r) for r in v]) for k, v in doc.get("objects", {}).items()}
    return MaskTrack(masks, per_object or {1: masks})


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


def write_png_masks(folder: str | Path, masks: np.ndarray) -> None:
    """One `<frame index, 5 digits>.png` per frame, 0 background / 255 object."""
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
