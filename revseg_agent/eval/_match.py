"""Boundary matching compiled with numba: how many boundary pixels of each mask lie within the
disk tolerance of the other's boundary. Optional: `metrics.py` uses it when numba is installed
and falls back to its numpy version otherwise (the tests check both against the reference).

Work is proportional to the boundary pixels, not to the image: each pixel first looks up a
coarse grid of the other boundary (cells of the radius's size) and only scans the disk, nearest
offsets first, where the grid says a match is possible.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from revseg_agent.eval.disk import disk_offsets


@njit(cache=True, nogil=True)
def _grid(points: np.ndarray, width: int, height: int, radius: int) -> np.ndarray:
    grid = np.zeros((height // radius + 3, width // radius + 3), np.bool_)
    for i in range(points.size):
        y = points[i] // width
        grid[y // radius + 1, (points[i] - y * width) // radius + 1] = True
    return grid


@njit(cache=True, nogil=True)
def _count_near(
    points: np.ndarray, grid: np.ndarray, target: np.ndarray, radius: int, dy: np.ndarray, dx: np.ndarray
) -> int:
    height, width = target.shape
    count = 0
    for i in range(points.size):
        y = points[i] // width
        x = points[i] - y * width
        cy = y // radius + 1
        cx = x // radius + 1
        possible = False
        for a in range(cy - 1, cy + 2):
            for b in range(cx - 1, cx + 2):
                if grid[a, b]:
                    possible = True
        if not possible:
            continue
        for k in range(dy.size):
            yy = y + dy[k]
            xx = x + dx[k]
            if 0 <= yy < height and 0 <= xx < width and target[yy, xx]:
                count += 1
                break
    return count


def match_counts(pred_boundary: np.ndarray, gt_boundary: np.ndarray, radius: int) -> tuple[int, int]:
    """(predicted boundary pixels near the true boundary, true boundary pixels near the predicted)."""
    height, width = gt_boundary.shape
    dy, dx = disk_offsets(radius)
    p_points = np.flatnonzero(pred_boundary)
    g_points = np.flatnonzero(gt_boundary)
    p_grid = _grid(p_points, width, height, radius)
    g_grid = _grid(g_points, width, height, radius)
    pv, gv = pred_boundary.view(np.uint8), gt_boundary.view(np.uint8)
    return (
        int(_count_near(p_points, g_grid, gv, radius, dy, dx)),
        int(_count_near(g_points, p_grid, pv, radius, dy, dx)),
    )
