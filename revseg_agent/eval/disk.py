"""The disk of pixels F's boundary matching searches within (the DAVIS toolkit's `disk(radius)`),
shared by the numpy matcher in `metrics` and the compiled one in `_match`."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def disk_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """`(dy, dx)` of the pixels of `disk(radius)` (x² + y² <= r²), nearest to the centre first."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    inside = yy * yy + xx * xx <= radius * radius
    dy, dx = yy[inside], xx[inside]
    order = np.argsort(dy * dy + dx * dx, kind="stable")
    return dy[order].astype(np.int64), dx[order].astype(np.int64)
