"""J (region similarity) and F (boundary F-measure) exactly as the DAVIS toolkit defines them,
on whole `(frames, height, width)` mask stacks, plus the DAVIS statistics and ReVOS's A and R.

Definitions (DAVIS 2017 `db_eval_iou` / `db_eval_boundary`, also `vos-benchmark`):
- J = |P ∩ G| / |P ∪ G|; 1 when both masks are empty.
- Boundary map: a pixel is on the boundary when it differs from its east, south or south-east
  neighbour; the last row compares only eastwards, the last column only southwards, and the
  bottom-right pixel is never a boundary (so a full-frame mask has none).
- Each boundary is dilated with the disk `x² + y² <= r²`, `r = ceil(0.008 * sqrt(H² + W²))`.
- precision = predicted boundary pixels inside the dilated true boundary / predicted boundary
  pixels; recall the other way round; F = 2PR / (P + R), 0 when P + R = 0. No boundary on either
  side: F = 1. A boundary on one side only: F = 0.

Speed: each frame is scored on the crop around its masks (outside it nothing can change), and
boundary matching works on the boundary pixels, not the image: compiled with numba when it is
installed (`_match.py`), else in numpy (`_near`: two rectangle dilations settle almost every
pixel, the disk itself the few in between). Both are proven against `vos-benchmark` in the tests
and timed side by side in `benchmarks/metrics_speed.py`.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from revseg_agent.eval.disk import disk_offsets

#: DAVIS's boundary tolerance as a fraction of the image diagonal.
BOUNDARY_TOLERANCE = 0.008


def _as_stack(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (frames, height, width) or (height, width), got {masks.shape}")
    return masks.astype(bool, copy=False)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_stack(pred), _as_stack(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} does not match ground truth shape {g.shape}")
    return p, g


def boundary_map(masks: np.ndarray) -> np.ndarray:
    """DAVIS's 1-pixel boundary map (`_seg2bmap`) for a stack, vectorised.

    Equivalent to XOR with the east, south and south-east neighbours after padding the bottom
    row and the right column by replication (which reproduces the toolkit's border rules).
    """
    m = _as_stack(masks)
    padded = np.pad(m, ((0, 0), (0, 1), (0, 1)), mode="edge")
    return _boundary_of_padded(padded)


def _boundary_of_padded(padded: np.ndarray) -> np.ndarray:
    """Boundary of `padded[..., :-1, :-1]` given its true (or replicated) south/east neighbours."""
    m = padded[..., :-1, :-1]
    return (m ^ padded[..., :-1, 1:]) | (m ^ padded[..., 1:, :-1]) | (m ^ padded[..., 1:, 1:])


def boundary_radius(height: int, width: int, tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Tolerance radius in pixels: `ceil(tolerance * diagonal)` (8 at 854x480)."""
    return int(tolerance) if tolerance >= 1 else math.ceil(tolerance * math.hypot(height, width))


@functools.lru_cache(maxsize=8)
def _square(side: int) -> np.ndarray:
    return np.ones((2 * side + 1, 2 * side + 1), np.uint8)


def _near(source: np.ndarray, target: np.ndarray, radius: int) -> int:
    """How many `source` pixels have a `target` pixel within `disk(radius)` of them.

    Equals `count_nonzero(source & dilate(target, disk(radius)))` without the disk dilation,
    which costs O(r²) per pixel. Two rectangle dilations (O(1) per pixel) settle almost every
    source pixel: a target pixel in the square inscribed in the disk means near; none in the
    square around the disk means not near. Only the few pixels in between are checked against
    the disk itself, with one gather.
    """
    src = source.ravel()
    inner_side = math.isqrt(radius * radius // 2)  # inner_side² + inner_side² <= r²
    tgt = target.view(np.uint8)
    inner = cv2.dilate(tgt, _square(inner_side)).view(bool).ravel()
    outer = cv2.dilate(tgt, _square(radius)).view(bool).ravel()
    near = int(np.count_nonzero(src & inner))
    ring = np.flatnonzero(src & outer & ~inner)
    if ring.size:
        w = target.shape[1]
        padded = cv2.copyMakeBorder(tgt, radius, radius, radius, radius, cv2.BORDER_CONSTANT, value=0)
        stride = w + 2 * radius
        base = (ring // w + radius) * stride + ring % w + radius
        dy, dx = disk_offsets(radius)
        hits = padded.ravel()[base[:, None] + (dy * stride + dx)[None, :]]
        near += int(np.count_nonzero(hits.any(axis=1)))
    return near


def _match_counts_numpy(pred_boundary: np.ndarray, gt_boundary: np.ndarray, radius: int) -> tuple[int, int]:
    return _near(pred_boundary, gt_boundary, radius), _near(gt_boundary, pred_boundary, radius)


try:  # the compiled matcher when numba is installed (same numbers, faster on large objects)
    from revseg_agent.eval._match import match_counts as _match_counts
except ImportError:  # pragma: no cover - depends on the environment
    _match_counts = _match_counts_numpy


_CORNER = np.ones((2, 2), np.uint8)


def _boundary_crop(extended: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boundary map of `extended[:height, :width]`; `extended` holds the true south/east
    neighbours where they exist (one more row / column), else the border is replicated."""
    src = extended.view(np.uint8)
    hi = cv2.dilate(src, _CORNER, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(src, _CORNER, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    return np.not_equal(hi[:height, :width], lo[:height, :width])


@dataclass(frozen=True)
class FrameScores:
    """Per-frame J, F, boundary precision and boundary recall, each `(frames,)` float64."""

    j: np.ndarray
    f: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def score_frames(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> FrameScores:
    """J and F (with boundary precision and recall) on every frame of a stack.

    Each frame is scored on the crop around `pred | gt` grown by the tolerance radius plus one
    pixel: outside it both masks are empty, so no boundary pixel and no dilation can lie there.
    The crop keeps the true south/east neighbours (or replicates the last row/column at the
    image border), so boundaries are exactly the full-frame ones.
    """
    p, g = _check_pair(pred, gt)
    n, h, w = p.shape
    radius = boundary_radius(h, w, tolerance)
    rows_any: np.ndarray = np.logical_or(p.any(axis=2), g.any(axis=2))
    j = np.ones(n)
    precision = np.ones(n)
    recall = np.ones(n)
    for i in range(n):
        rows = np.flatnonzero(rows_any[i])
        if rows.size == 0:
            continue  # both empty: J = 1, no boundary on either side: F = 1
        slab = slice(int(rows[0]), int(rows[-1]) + 1)
        cols = np.flatnonzero(p[i, slab].any(axis=0) | g[i, slab].any(axis=0))
        y0, y1 = max(int(rows[0]) - 1 - radius, 0), min(int(rows[-1]) + 2 + radius, h)
        x0, x1 = max(int(cols[0]) - 1 - radius, 0), min(int(cols[-1]) + 2 + radius, w)
        pe = np.ascontiguousarray(p[i, y0 : y1 + 1, x0 : x1 + 1])
        ge = np.ascontiguousarray(g[i, y0 : y1 + 1, x0 : x1 + 1])
        pc, gc = pe[: y1 - y0, : x1 - x0], ge[: y1 - y0, : x1 - x0]
        j[i] = np.count_nonzero(pc & gc) / float(np.count_nonzero(pc | gc))
        pb, gb = _boundary_crop(pe, y1 - y0, x1 - x0), _boundary_crop(ge, y1 - y0, x1 - x0)
        n_pred, n_gt = np.count_nonzero(pb), np.count_nonzero(gb)
        if n_pred == 0 or n_gt == 0:
            precision[i] = 0.0 if n_pred > 0 else 1.0
            recall[i] = 0.0 if n_gt > 0 else 1.0
            continue
        near_pred, near_gt = _match_counts(pb, gb, radius)
        precision[i] = near_pred / float(n_pred)
        recall[i] = near_gt / float(n_gt)
    denom = precision + recall
    f = np.zeros(n)
    ok = denom > 0
    f[ok] = 2 * precision[ok] * recall[ok] / denom[ok]
    return FrameScores(j, f, precision, recall)


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """J per frame, `(frames,)` float64."""
    p, g = _check_pair(pred, gt)
    inter = np.count_nonzero(p & g, axis=(1, 2)).astype(np.float64)
    union = np.count_nonzero(p | g, axis=(1, 2)).astype(np.float64)
    out = np.ones(len(p), dtype=np.float64)
    nz = union > 0
    out[nz] = inter[nz] / union[nz]
    return out


def boundary_measure(
    pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F, precision and recall per frame, each `(frames,)` float64."""
    s = score_frames(pred, gt, tolerance)
    return s.f, s.precision, s.recall


@dataclass(frozen=True)
class Statistics:
    """DAVIS statistics of a per-frame series: mean, recall (share > 0.5) and decay."""

    mean: float
    recall: float
    decay: float


def davis_statistics(values: np.ndarray) -> Statistics:
    """As the DAVIS toolkit's `db_statistics` (four bins, decay = first bin mean - last bin mean).

    The toolkit casts bin edges to uint8, which wraps for series longer than 256 frames; here they
    are plain integers, which agrees wherever the toolkit is correct.
    """
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return Statistics(mean, recall, decay)


def revos_accuracy(pred: np.ndarray, target_sum: np.ndarray) -> np.ndarray:
    """ReVOS's A per frame, as the official `get_r2vos_accuracy` computes it: the share of pixels
    where the 0/1 prediction equals the targets' uint8 sum (a pixel two targets share holds 2 and
    never counts as right: the published protocol, kept)."""
    p = np.asarray(pred).astype(np.uint8) > 0
    g = np.asarray(target_sum, dtype=np.uint8)
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} must be equal (frames, H, W)")
    return np.count_nonzero(p.astype(np.uint8) == g, axis=(1, 2)) / float(p.shape[1] * p.shape[2])


def revos_robustness(pred: np.ndarray, target_sum: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """ReVOS's R per frame, as the official `get_r2vos_robustness` computes it:
    `max(1 - sum((1 - gt) * pred) / (sum(foreground) + 1e-6), 0)` with the video's foreground
    (`mask_dict_foreground.json`) as the denominator, in the script's uint8 arithmetic (where two
    targets overlap, `1 - 2` wraps to 255: the published protocol, kept)."""
    p = (np.asarray(pred) > 0).astype(np.uint8)
    g = np.asarray(target_sum, dtype=np.uint8)
    fg = np.asarray(foreground, dtype=np.uint8)
    if not p.shape == g.shape == fg.shape or p.ndim != 3:
        raise ValueError(f"prediction {p.shape}, ground truth {g.shape}, foreground {fg.shape} differ")
    out = np.empty(len(p))
    for k in range(len(p)):
        negative = float(((np.uint8(1) - g[k]) * p[k]).sum(dtype=np.int64))
        positive = float(fg[k].sum(dtype=np.int64))
        out[k] = max(1.0 - negative / (positive + 1e-6), 0.0)
    return out


@dataclass(frozen=True)
class ClipScore:
    """Per-frame J and F of one expression and their means (fractions, not percent)."""

    j: np.ndarray
    f: np.ndarray

    @property
    def j_mean(self) -> float:
        return float(self.j.mean()) if len(self.j) else 0.0

    @property
    def f_mean(self) -> float:
        return float(self.f.mean()) if len(self.f) else 0.0

    @property
    def jf(self) -> float:
        return (self.j_mean + self.f_mean) / 2


def score_clip(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> ClipScore:
    """J and F on every frame of a clip (no frame skipped, empty frames included)."""
    s = score_frames(pred, gt, tolerance)
    return ClipScore(s.j, s.f)
