"""Box arithmetic and the coordinate convention."""

from __future__ import annotations

import numpy as np
import pytest

from revseg_agent.types import Box, MaskTrack


def test_box_from_mask_is_tight_and_half_open() -> None:
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:9] = True
    assert Box.from_mask(mask) == Box(3, 2, 9, 5)
    assert Box.from_mask(np.zeros((4, 4), bool)) is None


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        (Box(0, 0, 10, 10), Box(0, 0, 10, 10), 1.0),
        (Box(0, 0, 10, 10), Box(5, 0, 15, 10), 50 / 150),
        (Box(0, 0, 10, 10), Box(20, 20, 30, 30), 0.0),
        (Box(0, 0, 0, 0), Box(0, 0, 0, 0), 0.0),
    ],
)
def test_iou(a: Box, b: Box, iou: float) -> None:
    assert a.iou(b) == pytest.approx(iou)


def test_rescale_and_clip() -> None:
    box = Box(14, 28, 140, 280).rescale((476, 840), (480, 854))
    assert box.to_list() == pytest.approx([14 * 854 / 840, 28 * 480 / 476, 140 * 854 / 840, 280 * 480 / 476])
    assert Box(-5, -5, 500, 10).clip(100, 50) == Box(0, 0, 100, 10)


def test_box_needs_four_numbers() -> None:
    with pytest.raises(ValueError, match="4 numbers"):
        Box.from_list([1, 2, 3])


def test_mask_track_validates_shape() -> None:
    with pytest.raises(ValueError, match="frames, height, width"):
        MaskTrack(np.zeros((4, 4), bool))
    assert MaskTrack(np.ones((2, 3, 4), np.uint8)).masks.dtype == bool


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ([], []),
        ([(2, 3, 5, 9)], [(2, 3, 5, 9)]),
        # two separate targets: one box each, largest first
        ([(0, 0, 4, 4), (10, 10, 20, 20)], [(10, 10, 20, 20), (0, 0, 4, 4)]),
        # touching regions are one region (8-connected: corners touch)
        ([(0, 0, 5, 5), (5, 5, 8, 8)], [(0, 0, 8, 8)]),
        # a speck under 1% of the largest region is dropped
        ([(0, 0, 20, 20), (25, 25, 26, 26)], [(0, 0, 20, 20)]),
    ],
)
def test_boxes_of_regions(regions: list[tuple[int, int, int, int]], expected: list[tuple[int, ...]]) -> None:
    mask = np.zeros((30, 30), bool)
    for x1, y1, x2, y2 in regions:
        mask[y1:y2, x1:x2] = True
    assert [b.to_list() for b in Box.of_regions(mask)] == [list(map(float, e)) for e in expected]
