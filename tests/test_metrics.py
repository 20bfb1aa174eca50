"""J and F exactly as the DAVIS toolkit computes them (checked against `vos-benchmark`)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from revseg_agent.eval.metrics import (
    boundary_map,
    boundary_measure,
    boundary_radius,
    davis_statistics,
    region_similarity,
    revos_accuracy,
    revos_robustness,
    score_clip,
    score_frames,
)

from .conftest import DAVIS_SEQUENCES, SHARED_DATA, davis_masks

H, W = 48, 64


def _mask(*boxes: tuple[int, int, int, int], shape: tuple[int, int] = (H, W)) -> np.ndarray:
    m = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


EMPTY = _mask()
FULL = np.ones((H, W), bool)
SQUARE = _mask((10, 30, 10, 30))

EDGE_CASES = [
    # name, pred, gt, J, F
    ("both empty", EMPTY, EMPTY, 1.0, 1.0),
    ("prediction empty", EMPTY, SQUARE, 0.0, 0.0),
    ("ground truth empty", SQUARE, EMPTY, 0.0, 0.0),
    ("identical", SQUARE, SQUARE, 1.0, 1.0),
    ("full frame vs full frame", FULL, FULL, 1.0, 1.0),  # a full-frame mask has no boundary
    ("full frame vs square", FULL, SQUARE, 400 / (H * W), 0.0),
    ("one pixel vs the same pixel", _mask((5, 6, 5, 6)), _mask((5, 6, 5, 6)), 1.0, 1.0),
    # r = 1 px at 64x48: the neighbour's boundary is within tolerance, J still counts no overlap
    ("one pixel vs its neighbour", _mask((5, 6, 5, 6)), _mask((5, 6, 6, 7)), 0.0, 1.0),
    ("one pixel vs a pixel 3 px away", _mask((5, 6, 5, 6)), _mask((5, 6, 8, 9)), 0.0, 0.0),
    ("one pixel vs a pixel far away", _mask((5, 6, 5, 6)), _mask((40, 41, 60, 61)), 0.0, 0.0),
    ("disjoint far squares", _mask((0, 5, 0, 5)), _mask((40, 48, 50, 64)), 0.0, 0.0),
]


@pytest.mark.parametrize(("name", "pred", "gt", "j", "f"), EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_cases(name: str, pred: np.ndarray, gt: np.ndarray, j: float, f: float) -> None:
    assert region_similarity(pred, gt)[0] == pytest.approx(j)
    assert boundary_measure(pred, gt)[0][0] == pytest.approx(f)


def test_radius_follows_the_diagonal() -> None:
    assert boundary_radius(480, 854) == 8
    assert boundary_radius(720, 1280) == 12
    assert boundary_radius(H, W) == 1


def test_boundary_rules_at_the_image_border() -> None:
    # A mask touching the bottom-right corner: its boundary lies only where it meets background.
    m = _mask((40, 48, 50, 64))
    b = boundary_map(m)[0]
    assert not b[-1, -1] and not b[-1, 55]  # the image border itself is not a boundary
    assert b[39, 55] and b[45, 49]  # boundaries sit half a pixel towards the origin
    assert boundary_map(FULL)[0].sum() == 0


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="does not match"):
        region_similarity(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_statistics() -> None:
    values = np.array([1.0, 1.0, 0.8, 0.6, 0.4, 0.4, 0.2, 0.0])
    stats = davis_statistics(values)
    assert stats.mean == pytest.approx(values.mean())
    assert stats.recall == pytest.approx(4 / 8)
    # the toolkit's bin edges: round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7], bins include both ends
    assert stats.decay == pytest.approx(np.mean([1, 1, 0.8]) - np.mean([0.4, 0.2, 0.0]))


def test_revos_accuracy_and_robustness() -> None:
    """The official ReVOS arithmetic (VISA `tools/metrics.py`): per frame, R's denominator is the
    video's foreground, not the expression's own truth."""
    gt = np.zeros((2, 4, 4), np.uint8)
    gt[:, :2, :2] = 1  # 4 target pixels per frame
    foreground = np.zeros_like(gt)
    foreground[:, :, :2] = 1  # 8 foreground pixels per frame (the target and another object)
    pred = gt.astype(bool)
    pred[0, 3, 3] = True  # one false positive on frame 0
    pred[1, 0, 0] = False  # one false negative on frame 1
    assert revos_accuracy(pred, gt).tolist() == [15 / 16, 15 / 16]
    assert revos_robustness(pred, gt, foreground).tolist() == pytest.approx([1 - 1 / (8 + 1e-6), 1.0])
    assert revos_robustness(np.ones_like(pred), gt, foreground).tolist() == [0.0, 0.0]  # clipped at 0
    # two targets overlapping: the script's uint8 sum holds 2 there; A counts it wrong and
    # 1 - 2 wraps to 255 in R (the published protocol, kept)
    overlap = gt.copy()
    overlap[:, 0, 0] = 2
    assert revos_accuracy(overlap > 0, overlap).tolist() == [15 / 16, 15 / 16]
    assert revos_robustness(overlap > 0, overlap, foreground).tolist() == [0.0, 0.0]


def test_score_clip_means() -> None:
    pred = np.stack([SQUARE, EMPTY])
    gt = np.stack([SQUARE, SQUARE])
    score = score_clip(pred, gt)
    assert (score.j_mean, score.f_mean, score.jf) == (0.5, 0.5, 0.5)


# -- agreement with the reference implementation --------------------------------------------


def _reference(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F from `vos-benchmark` (the DAVIS toolkit's boundary code); only the
    tests that compare with it skip when it is not installed (`make install` installs it)."""
    vos_benchmark = pytest.importorskip("vos_benchmark.evaluator")
    js, fs = [], []
    for p, g in zip(pred, gt, strict=True):
        ev = vos_benchmark.Evaluator()
        ev.objects_in_gt.add(1)  # score frames where the object is absent from both, as DAVIS does
        ev.feed_frame(p.astype(np.uint8), g.astype(np.uint8))
        js.append(ev.object_iou[1][0])
        fs.append(ev.boundary_f[1][0])
    return np.array(js, float), np.array(fs, float)


@pytest.fixture(params=["compiled", "numpy"], autouse=True)
def matcher(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the numba boundary matcher and with the numpy fallback."""
    from revseg_agent.eval import metrics

    if request.param == "numpy":
        monkeypatch.setattr(metrics, "_match_counts", metrics._match_counts_numpy)
    else:
        pytest.importorskip("numba")
        from revseg_agent.eval._match import match_counts

        monkeypatch.setattr(metrics, "_match_counts", match_counts)
    return str(request.param)


def _assert_agrees(pred: np.ndarray, gt: np.ndarray) -> None:
    ours = score_frames(pred, gt)
    ref_j, ref_f = _reference(pred, gt)
    np.testing.assert_allclose(ours.j, ref_j, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.f, ref_f, atol=1e-6, rtol=0)


def test_agrees_with_reference_on_random_blobs_touching_every_border() -> None:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(60):
        h, w = rng.integers(8, 90, size=2)
        base = rng.random((h // 4 + 1, w // 4 + 1)) > 0.6
        blob = np.kron(base, np.ones((4, 4), bool))[:h, :w]
        frames.append(
            (blob, np.roll(blob, rng.integers(-3, 4, size=2), axis=(0, 1)) | (rng.random((h, w)) > 0.97))
        )
    for p, g in frames:
        _assert_agrees(p[None], g[None])


@pytest.mark.davis
@pytest.mark.parametrize("sequence", DAVIS_SEQUENCES)
def test_agrees_with_reference_on_davis_vs_osvos(davis: Path, sequence: str) -> None:
    gt = davis_masks(davis, sequence)
    osvos = np.stack(
        [
            np.array(Image.open(p)) > 0
            for p in sorted((SHARED_DATA / "osvos-predictions" / sequence).glob("*.png"))
        ]
    )
    _assert_agrees(osvos, gt)
    assert 0.5 < score_clip(osvos, gt).jf < 1.0  # a real, non-trivial score


@pytest.mark.davis
def test_agrees_with_reference_on_sav_masklets(davis: Path) -> None:
    root = SHARED_DATA / "sav_000001-masks" / "Annotations"
    objects = sorted(p for p in root.iterdir() if p.is_dir())
    stacks = [np.stack([np.array(Image.open(f)) > 127 for f in sorted(obj.glob("*.png"))]) for obj in objects]
    # Masklets against each other: disappearing objects, empty frames on one or both sides.
    for a, b in itertools.pairwise(stacks):
        _assert_agrees(a, b)
    _assert_agrees(stacks[0], stacks[0] | stacks[2])  # a union, as multi-object targets are scored
