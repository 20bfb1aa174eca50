"""Ref-DAVIS17's protocol, as VideoLISA's `post_process_davis.py` + `eval_davis.py` (the DAVIS
2017 toolkit, unsupervised task) score it (the evaluation ReferFormer, VideoLISA and Sa2VA report):

- Merge: per set (annotator), a video's expressions become one label map per frame: expression
  `k` of the set (object order) paints label `k + 1`, and where two predictions overlap the
  earlier object keeps the pixel (the script's argmax over a 0.1 background and the masks takes
  the first maximum).
- Ground truth: the palette annotations' objects 1..K, where K is the largest id on the FIRST
  frame (the toolkit's `get_all_masks`; an object that only appears later is not scored); 255 is
  void. Predicted objects are the ids 1..max of the merged labels (absent ids are empty ones).
- Void pixels are removed from both masks for J and from the prediction for F (as the toolkit's
  `db_eval_iou` / `db_eval_boundary` do); every frame is scored (unsupervised task).
- Predicted and true objects are paired by the Hungarian method on mean (J + F) / 2 over the
  video; a true object left without a partner scores against an empty mask.
- Per set: J and F are the means over all objects of all videos; papers report the average of
  the four sets, which is the top-level number here.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from revseg_agent.eval.datasets import (
    FRAME_SUFFIXES,
    DatasetError,
    RefDAVISBenchmark,
    Sample,
    read_prediction,
)
from revseg_agent.eval.metrics import boundary_measure, region_similarity
from revseg_agent.video import frame_files

VOID = 255
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128] + [128] * (
    256 * 3 - 21
)


def _labels(folder: Path, frames: list[str]) -> np.ndarray:
    files = frame_files(folder, FRAME_SUFFIXES)
    missing = [f for f in frames if f not in files]
    if missing:
        raise DatasetError(f"{folder}: frames missing: {missing[:3]}")
    return np.stack([np.array(Image.open(files[f])) for f in frames])


def merge_predictions(samples: list[Sample], masks: dict[str, np.ndarray]) -> np.ndarray:
    """One label map per frame: the `k`-th expression's mask painted with `k + 1`; on overlaps
    the earlier expression keeps the pixel (the official script's argmax takes the first)."""
    first = next(iter(masks.values()))
    labels = np.zeros(first.shape, np.uint8)
    for k, sample in enumerate(samples):
        if sample.key in masks:
            labels[masks[sample.key] & (labels == 0)] = k + 1
    return labels


def write_merged(path_root: Path, set_name: str, video: str, frames: list[str], labels: np.ndarray) -> None:
    """Palette PNGs `<root>/<set>/<video>/<frame>.png`, the layout the DAVIS toolkit reads."""
    folder = path_root / set_name / video
    folder.mkdir(parents=True, exist_ok=True)
    for name, label in zip(frames, labels, strict=True):
        im = Image.fromarray(label, mode="P")
        im.putpalette(PALETTE)
        im.save(folder / f"{name}.png")


def score_video(gt_labels: np.ndarray, pred_labels: np.ndarray) -> list[tuple[float, float]]:
    """(J mean, F mean) of every true object, after Hungarian pairing with predicted objects."""
    void = gt_labels == VOID
    first = np.where(void[0], 0, gt_labels[0])
    gt_ids = list(range(1, int(first.max()) + 1))  # the toolkit counts the first frame's objects
    pred_ids = list(range(1, int(pred_labels.max()) + 1))
    if not gt_ids:
        return []
    n = max(len(gt_ids), len(pred_ids))
    j = np.zeros((n, len(gt_ids), len(gt_labels)))
    f = np.zeros_like(j)
    for a, pid in enumerate(pred_ids):
        pred = (pred_labels == pid) & ~void
        for b, gid in enumerate(gt_ids):
            gt = (gt_labels == gid) & ~void
            j[a, b] = region_similarity(pred, gt)
            f[a, b] = boundary_measure(pred, gt_labels == gid)[0]
    for a in range(len(pred_ids), n):  # the toolkit pads missing predictions with empty masks
        for b, gid in enumerate(gt_ids):
            gt = (gt_labels == gid) & ~void
            empty = np.zeros_like(gt)
            j[a, b] = region_similarity(empty, gt)
            f[a, b] = boundary_measure(empty, gt_labels == gid)[0]
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    return [(float(j[r, c].mean()), float(f[r, c].mean())) for r, c in zip(rows, cols, strict=True)]


def score_refdavis(
    bench: RefDAVISBenchmark, pred_root: Path, merged_root: Path | None = None
) -> dict[str, Any]:
    """Score predictions in the per-expression layout with the toolkit's protocol, per set."""
    by_video: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for sample in bench.samples():
        by_video[(sample.subset or "set", sample.video)].append(sample)
    per_set: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (set_name, video), samples in sorted(by_video.items()):
        frames = samples[0].frames
        gt_labels = _labels(bench.root / "Annotations" / video, frames)
        size = gt_labels.shape[1:]
        masks = {}
        for s in samples:
            pred = read_prediction(bench, pred_root, s, (int(size[0]), int(size[1])))
            if pred is not None:
                masks[s.key] = pred
        pred_labels = merge_predictions(samples, masks) if masks else np.zeros_like(gt_labels)
        if merged_root is not None:
            write_merged(merged_root, set_name, video, frames, pred_labels)
        per_set[set_name].extend(score_video(gt_labels, pred_labels))
    subsets = {}
    for set_name, scores in sorted(per_set.items()):
        jm = 100 * float(np.mean([s[0] for s in scores]))
        fm = 100 * float(np.mean([s[1] for s in scores]))
        subsets[set_name] = {"J": jm, "F": fm, "J&F": (jm + fm) / 2, "count": len(scores)}
    top = {
        k: float(np.mean([row[k] for row in subsets.values()])) if subsets else 0.0 for k in ("J", "F", "J&F")
    }
    return {
        "protocol": "davis2017-unsupervised (merged palette masks, Hungarian matching)",
        **top,
        "subsets": subsets,
    }
