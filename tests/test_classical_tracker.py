"""The weight-free tracker: CSRT box propagation + GrabCut masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revseg_agent.errors import InputError
from revseg_agent.synth.square_clip import DEMO_FRAMES, square_box
from revseg_agent.tools.classical import ClassicalTracker
from revseg_agent.video import open_video

from .conftest import DAVIS_SEQUENCES, davis_masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _square_masks() -> np.ndarray:
    masks = np.zeros((DEMO_FRAMES, 240, 320), bool)
    for i in range(DEMO_FRAMES):
        b = square_box(i)
        masks[i, int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)] = True
    return masks


def test_follows_the_square_both_ways(demo_clip: Path) -> None:
    key = 12
    ticks: list[int] = []
    tracker = ClassicalTracker()
    result = tracker.track(
        open_video(demo_clip), frame_index=key, boxes=[square_box(key)], progress=ticks.append
    )
    gt = _square_masks()
    ious = [_iou(p, g) for p, g in zip(result.masks, gt, strict=True)]
    # Backward and forward both follow it, also where the blue circle comes close at the end.
    assert min(ious[:key]) > 0.9 and min(ious[key:]) > 0.9
    assert ious[key] > 0.9
    assert sum(ticks) == tracker.work_units(open_video(demo_clip)) == DEMO_FRAMES


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_index": 0, "boxes": []}, "at least one box"),
        ({"frame_index": DEMO_FRAMES, "boxes": [square_box(0)]}, "outside the video"),
    ],
)
def test_bad_prompts(demo_clip: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ClassicalTracker().track(open_video(demo_clip), **kwargs)


@pytest.mark.slow
@pytest.mark.davis
def test_davis_ground_truth_box_on_the_middle_frame(davis: Path) -> None:
    """Real video: the floor sits below the benchmark figure (benchmarks/classical_tracker_davis.py)."""
    from revseg_agent.types import Box

    js = []
    for seq in DAVIS_SEQUENCES:
        gt = davis_masks(davis, seq)
        key = len(gt) // 2
        box = Box.from_mask(gt[key])
        assert box is not None
        result = ClassicalTracker().track(
            open_video(davis / "JPEGImages" / seq), frame_index=key, boxes=[box]
        )
        js.append(np.mean([_iou(p, g) for p, g in zip(result.masks, gt, strict=True)]))
    assert np.mean(js) > 0.65, js  # measured 0.739 (blackswan 0.800, car-shadow 0.581, dog 0.835)


def _disturb_opencv_rng(seed: int) -> None:
    """Unrelated OpenCV work that draws from (and reseeds) the calling thread's generator."""
    import cv2

    cv2.setRNGSeed(seed)
    cv2.randu(np.zeros((64, 64), np.float32), 0, 1)


@pytest.mark.timeout(300)
def test_same_input_same_masks_whatever_ran_before(demo_clip: Path) -> None:
    """GrabCut initialises from OpenCV's per-thread generator: the masks must not depend on
    what drew from it before, in this thread or another."""
    import threading

    tracker = ClassicalTracker()
    box = square_box(6)
    first = tracker.track(open_video(demo_clip), frame_index=6, boxes=[box]).masks
    _disturb_opencv_rng(12345)
    again = tracker.track(open_video(demo_clip), frame_index=6, boxes=[box]).masks
    assert np.array_equal(first, again)

    from_threads: dict[int, np.ndarray] = {}

    def run(k: int) -> None:
        _disturb_opencv_rng(1000 + k)
        from_threads[k] = tracker.track(open_video(demo_clip), frame_index=6, boxes=[box]).masks

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(np.array_equal(first, from_threads[k]) for k in range(2))


@pytest.mark.parametrize(
    "box",
    [
        (0.0, 0.0, 2.0, 2.0),  # a corner
        (
            110.0,
            40.0,
            112.0,
            60.0,
        ),  # 2 px wide at the right edge (a policy's "[112, 25, 112, 52]" after clipping)
        (40.0, 110.0, 60.0, 112.0),  # 2 px high at the bottom edge
        (55.0, 55.0, 57.0, 57.0),  # tiny, in the middle
        (0.0, 0.0, 112.0, 112.0),  # the whole frame
    ],
)
def test_tiny_and_edge_boxes_track_instead_of_crashing(
    tmp_path: Path, box: tuple[float, float, float, float]
) -> None:
    """OpenCV's CSRT asserts on 1-2 px templates; a policy's box may be that small."""
    from PIL import Image

    from revseg_agent.tools.base import stream_masks
    from revseg_agent.types import Box

    for k in range(6):
        Image.fromarray(_noise(k)).save(tmp_path / f"{k:05d}.png")
    video = open_video(tmp_path)
    frames = list(stream_masks(ClassicalTracker(), video, frame_index=2, boxes=[Box(*box)]))
    assert sorted(f.index for f in frames) == list(range(6))


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (112, 112, 3)).astype(np.uint8)
