"""ReVSeg's rewards as pure functions over traces and ground truth, with TRL's reward signature.

Each reward takes `completions` (here: one `Trace` per rollout) and the dataset's columns as
keyword arguments (`gt_masks`: the union mask stack `(frames, H, W)`; `gt_objects`: per-object
stacks, for several targets), and returns one float per completion, or `None` where it does not
apply (no ground truth) — the convention of `trl.GRPOTrainer`'s `reward_funcs`.

- `format_reward`: 1 when both rounds' final answers follow the tagged ReVSeg format and parse,
  else 0.
- `temporal_reward`: the ground-truth area on the chosen keyframe over its largest area among the
  sampled frames (0 when the object is absent there, or the chain never chose a keyframe).
- `spatial_reward`: IoU of the predicted box with the ground-truth box on the keyframe; with
  several boxes or objects, the Hungarian-matched IoUs summed and divided by the larger count
  (unmatched boxes and missed objects count 0).
- `mask_reward` (costly, off by default): J&F of the propagated masks.
A round that ended in a fallback (see `Context.on_parse_failure`) earns nothing: the answer did
not come from the policy. `compute_rewards` also follows the chain: a rollout whose round 1 fell
back (middle frame, the query as description) earns no temporal, spatial, mask or extra reward,
and one whose round 2 fell back no spatial, mask or extra reward, unless the recipe opts in
(`RewardConfig.reward_fallbacks`).

    >>> from revseg_agent.training.rewards import RewardConfig
    >>> RewardConfig().weights
    {'format': 1.0, 'temporal': 1.0, 'spatial': 1.0, 'mask': 0.0}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy.optimize import linear_sum_assignment

from revseg_agent.eval.diagnostics import keyframe_area_ratio
from revseg_agent.eval.metrics import score_clip
from revseg_agent.graphs.names import SEMANTIC_INTERPRETATION, SPATIAL_GROUNDING
from revseg_agent.graphs.traces import StepRecord, Trace
from revseg_agent.masks_io import read_masks_json
from revseg_agent.types import Box

ROUND1 = SEMANTIC_INTERPRETATION
ROUND2 = SPATIAL_GROUNDING


def _answered(step: StepRecord | None) -> bool:
    """The round's final answer came from the policy and parsed."""
    return step is not None and step.error is None and step.fallback is None and step.parsed is not None


def format_reward(completions: Sequence[Trace], **kwargs: Any) -> list[float | None]:
    out: list[float | None] = []
    for trace in completions:
        r1, r2 = trace.final_step(ROUND1), trace.final_step(ROUND2)
        ok = (
            _answered(r1)
            and _answered(r2)
            and bool(r1.parsed.get("strict_format"))  # type: ignore[union-attr]
            and bool(r2.parsed.get("strict_format"))  # type: ignore[union-attr]
        )
        out.append(1.0 if ok else 0.0)
    return out


def temporal_reward(
    completions: Sequence[Trace], gt_masks: Sequence[np.ndarray | None], **kwargs: Any
) -> list[float | None]:
    out: list[float | None] = []
    for trace, gt in zip(completions, gt_masks, strict=True):
        if gt is None:
            out.append(None)
            continue
        key = trace.result.keyframe_index
        if key is None or not _answered(trace.final_step(ROUND1)) or not 0 <= key < len(gt):
            out.append(0.0)
            continue
        out.append(keyframe_area_ratio(gt, key, trace.sampled_indices or [key]))
    return out


def matched_box_iou(predicted: Sequence[Box], truth: Sequence[Box]) -> float:
    """Hungarian-matched IoU sum / max(len(predicted), len(truth)); 0 when either is empty."""
    if not predicted or not truth:
        return 0.0
    iou = np.array([[p.iou(t) for t in truth] for p in predicted])
    rows, cols = linear_sum_assignment(-iou)
    return float(iou[rows, cols].sum()) / max(len(predicted), len(truth))


def spatial_reward(
    completions: Sequence[Trace],
    gt_masks: Sequence[np.ndarray | None],
    gt_objects: Sequence[Sequence[np.ndarray] | None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    out: list[float | None] = []
    objects_per_sample = gt_objects if gt_objects is not None else [None] * len(completions)
    for trace, gt, objects in zip(completions, gt_masks, objects_per_sample, strict=True):
        if gt is None:
            out.append(None)
            continue
        key = trace.result.keyframe_index
        if key is None or not trace.result.boxes or not _answered(trace.final_step(ROUND2)):
            out.append(0.0)
            continue
        stacks = list(objects) if objects else [gt]
        truth = [b for b in (Box.from_mask(s[key]) for s in stacks) if b is not None]
        predicted = [Box.from_list(b) for b in trace.result.boxes]
        out.append(matched_box_iou(predicted, truth))
    return out


def mask_reward(
    completions: Sequence[Trace], gt_masks: Sequence[np.ndarray | None], **kwargs: Any
) -> list[float | None]:
    out: list[float | None] = []
    for trace, gt in zip(completions, gt_masks, strict=True):
        if gt is None:
            out.append(None)
        elif not trace.ok or not trace.result.masks_path:
            out.append(0.0)
        else:
            out.append(score_clip(read_masks_json(trace.result.masks_path).masks, gt).jf)
    return out


RewardFunc = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFunc] = {
    "format": format_reward,
    "temporal": temporal_reward,
    "spatial": spatial_reward,
    "mask": mask_reward,
}


class RewardConfig(BaseModel):
    """Weights of the rewards in the total, and gating.

    `gate_on_format`: temporal and spatial rewards count only when the format reward is 1 (a
    rollout that breaks the format earns nothing else). Rewards with weight 0 are not computed.
    """

    weights: dict[str, float] = Field(
        default_factory=lambda: {"format": 1.0, "temporal": 1.0, "spatial": 1.0, "mask": 0.0}
    )
    gate_on_format: bool = False
    #: Credit rewards to rollouts built on a fallback answer (off: what a fallback round feeds the
    #: next one did not come from the policy, so no reward downstream of it either).
    reward_fallbacks: bool = False

    def model_post_init(self, __context: Any) -> None:
        unknown = set(self.weights) - set(REWARDS)
        if unknown:
            raise ValueError(f"unknown rewards {sorted(unknown)}; known: {sorted(REWARDS)}")


#: Rewards that depend on round 1's keyframe and round 2's box (and so on both rounds).
DOWNSTREAM_OF_ROUND1 = {"temporal", "spatial", "mask"}
DOWNSTREAM_OF_ROUND2 = {"spatial", "mask"}


def fell_back(trace: Trace, node: str) -> bool:
    """The round's final answer is a fallback (or missing), not the policy's."""
    return not _answered(trace.final_step(node))


def compute_rewards(
    completions: Sequence[Trace],
    config: RewardConfig,
    *,
    gt_masks: Sequence[np.ndarray | None],
    gt_objects: Sequence[Sequence[np.ndarray] | None] | None = None,
    extra: Mapping[str, RewardFunc] | None = None,
) -> list[dict[str, float | None]]:
    """Each reward (by name) and the weighted `total` per completion.

    `extra` rewards (TRL signature, weight 1) go through the same checks and gates as the
    built-in ones and count as downstream of both rounds. A reward that does not apply (`None`)
    contributes nothing; a NaN reward is an error, never silently averaged into a training signal.
    """
    columns: dict[str, list[float | None]] = {}
    weights = {name: w for name, w in config.weights.items() if w != 0}
    for name in weights:
        columns[name] = REWARDS[name](completions, gt_masks=gt_masks, gt_objects=gt_objects)
    for name, func in (extra or {}).items():
        if name in columns or name == "total":
            raise ValueError(f"extra reward {name!r} has the name of a built-in reward")
        weights[name] = 1.0
        columns[name] = list(func(completions, gt_masks=gt_masks, gt_objects=gt_objects))
        if len(columns[name]) != len(completions):
            raise ValueError(
                f"reward {name!r} returned {len(columns[name])} values for {len(completions)} completions"
            )
    extra_names = set(extra or {})
    out = []
    for i, trace in enumerate(completions):
        row: dict[str, float | None] = {name: values[i] for name, values in columns.items()}
        for name, value in row.items():
            if value is not None and math.isnan(value):
                raise ValueError(f"reward {name!r} is NaN for completion {i}")
        zeroed: set[str] = set()
        if config.gate_on_format and row.get("format") is not None and row["format"] != 1.0:
            zeroed |= DOWNSTREAM_OF_ROUND1 | extra_names
        if not config.reward_fallbacks:
            if fell_back(trace, ROUND1):
                zeroed |= DOWNSTREAM_OF_ROUND1 | extra_names
            if fell_back(trace, ROUND2):
                zeroed |= DOWNSTREAM_OF_ROUND2 | extra_names
        for name in zeroed & row.keys():
            if row[name] is not None:
                row[name] = 0.0
        row["total"] = sum(weights[name] * value for name, value in row.items() if value is not None)
        out.append(row)
    return out
