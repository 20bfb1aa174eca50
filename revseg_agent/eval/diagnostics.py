"""Where did the points go? Per-expression diagnostics of the reasoning chain, and baselines.

For each expression, beside mask J&F:
- `round1_parsed` / `round2_parsed`: the rounds produced a usable answer (no fallback);
- `keyframe_area_ratio`: the ground-truth area on the chosen keyframe over its largest area on
  the sampled frames (ReVSeg's temporal reward; 0 when the object is absent there);
- `target_on_keyframe`: the target is visible on the chosen keyframe at all;
- `box_iou`: IoU of the predicted box (the hull of all boxes) with the ground-truth box on the
  keyframe (the spatial reward's quantity).
Baselines that bypass the policy and go straight to the same tracker:
- `oracle`: the sampled frame where the target is largest, with its ground-truth box (the
  tracker's ceiling for this chain);
- `random-keyframe`: a random sampled frame (seeded per expression) with its ground-truth box;
- `centre-box`: the middle sampled frame with the centre box (no information at all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from revseg_agent.graphs.names import SEMANTIC_INTERPRETATION, SPATIAL_GROUNDING
from revseg_agent.graphs.traces import Trace
from revseg_agent.types import Box

Baseline = Literal["oracle", "random-keyframe", "centre-box"]
BASELINES: tuple[str, ...] = ("oracle", "random-keyframe", "centre-box")


def sampled_areas(gt: np.ndarray, sampled: Sequence[int]) -> np.ndarray:
    """The ground-truth area on each sampled frame (the temporal reward's reference)."""
    return gt[list(sampled)].reshape(len(sampled), -1).sum(axis=1)


KeyframeTies = Literal["first", "middle"]


def best_sampled_position(gt: np.ndarray, sampled: Sequence[int], *, ties: KeyframeTies = "first") -> int:
    """Position (among the sampled frames) of the frame where the target is largest: the ideal
    keyframe (SFT's target, the oracle's keyframe, the temporal reward's 1.0). A target of
    constant size is largest on many frames (5 of 8 on average in the synthetic world's valid
    split); `ties` picks the first of them, or the one nearest the middle of the sampled frames
    (the later of two as near), where a target that enters or leaves is more often in view."""
    areas = sampled_areas(gt, sampled)
    largest = np.flatnonzero(areas == areas.max())
    if ties == "first":
        return int(largest[0])
    centre = (len(sampled) - 1) / 2
    return int(max(largest, key=lambda p: (-abs(float(p) - centre), p)))


def keyframe_area_ratio(gt: np.ndarray, keyframe: int, sampled: Sequence[int]) -> float:
    """GT area on the keyframe / the largest GT area over the sampled frames (0 if never visible)."""
    areas = sampled_areas(gt, sampled)
    best = float(areas.max()) if len(areas) else 0.0
    return float(gt[keyframe].sum()) / best if best > 0 else 0.0


def chain_diagnostics(trace: Trace, gt: np.ndarray) -> dict[str, Any]:
    """Diagnostics of one graph run against the expression's ground truth `(frames, H, W)`."""
    steps = trace.steps
    r1 = [s for s in steps if s.node == SEMANTIC_INTERPRETATION]
    r2 = [s for s in steps if s.node == SPATIAL_GROUNDING]
    out: dict[str, Any] = {
        "round1_parsed": any(s.error is None for s in r1),
        "round1_attempts": len(r1),
        "round2_parsed": any(s.error is None and s.parsed for s in r2),
        "round2_attempts": len(r2),
        "keyframe_index": trace.result.keyframe_index,
        "keyframe_area_ratio": None,
        "target_on_keyframe": None,
        "box_iou": None,
    }
    key = trace.result.keyframe_index
    if key is not None and 0 <= key < len(gt):
        out["keyframe_area_ratio"] = keyframe_area_ratio(gt, key, trace.sampled_indices or [key])
        out["target_on_keyframe"] = bool(gt[key].any())
        gt_box = Box.from_mask(gt[key])
        if trace.result.boxes and gt_box is not None:
            out["box_iou"] = Box.hull([Box.from_list(b) for b in trace.result.boxes]).iou(gt_box)
        elif trace.result.boxes:
            out["box_iou"] = 0.0
    return out


def baseline_prompt(kind: str, key: str, gt: np.ndarray, sampled: list[int]) -> tuple[int, list[Box]] | None:
    """Keyframe and boxes for a baseline, or None when it has nothing to track (target absent)."""
    if kind == "centre-box":
        return sampled[len(sampled) // 2], [Box.centre(gt.shape[1], gt.shape[2])]
    if kind == "oracle":
        frame = sampled[best_sampled_position(gt, sampled)]
    elif kind == "random-keyframe":
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
        frame = sampled[int(np.random.default_rng(seed).integers(len(sampled)))]
    else:
        raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    boxes = Box.of_regions(gt[frame])  # several targets: one box each, tracked as objects
    return (frame, boxes) if boxes else None


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Means of the diagnostics over expressions (None entries left out)."""

    def mean(key: str) -> float | None:
        values = [float(r[key]) for r in records if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    def median(key: str) -> float | None:
        values = [float(r[key]) for r in records if r.get(key) is not None]
        return float(np.median(values)) if values else None

    return {
        "expressions": len(records),
        "round1_parse_rate": mean("round1_parsed"),
        "round2_parse_rate": mean("round2_parsed"),
        "mean_keyframe_area_ratio": mean("keyframe_area_ratio"),
        "target_on_keyframe_rate": mean("target_on_keyframe"),
        "mean_box_iou": mean("box_iou"),
        "median_box_iou": median("box_iou"),
    }
