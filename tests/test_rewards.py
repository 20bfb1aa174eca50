"""ReVSeg's rewards on hand-written traces (TRL signature: completions + columns -> floats)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from revseg_agent.graphs.traces import StepError, StepRecord, Trace, TraceResult
from revseg_agent.training.rewards import (
    RewardConfig,
    compute_rewards,
    format_reward,
    matched_box_iou,
    spatial_reward,
    temporal_reward,
)
from revseg_agent.types import Box

SAMPLED = [0, 2, 4, 6]


def _step(
    node: str, *, parsed: dict[str, Any] | None = None, error: str | None = None, fallback: str | None = None
) -> StepRecord:
    return StepRecord(
        node=node,  # type: ignore[arg-type]
        parsed=parsed,
        error=StepError(code=error, message=error) if error else None,
        fallback=fallback,
        started_at=0.0,
        duration_s=0.0,
    )


def trace(
    keyframe: int | None = 2,
    boxes: list[list[float]] | None = None,
    *,
    strict: tuple[bool, bool] = (True, True),
    r1_fallback: bool = False,
    r2_error: bool = False,
) -> Trace:
    steps = [
        _step(
            "semantic_interpretation",
            parsed=None if r1_fallback else {"strict_format": strict[0]},
            error="no_answer" if r1_fallback else None,
            fallback="middle sampled frame" if r1_fallback else None,
        ),
        _step(
            "spatial_grounding",
            parsed=None if r2_error else {"strict_format": strict[1]},
            error="no_box" if r2_error else None,
        ),
    ]
    return Trace(
        video_path="v",
        query="q",
        policy="p",
        tracker="t",
        sampled_indices=SAMPLED,
        steps=steps,
        result=TraceResult(keyframe_index=keyframe, boxes=boxes if boxes is not None else [[2, 2, 6, 6]]),
    )


def gt() -> np.ndarray:
    """An object of 16 px on frame 2, 4 px on frame 4, absent on frames 0 and 6."""
    m = np.zeros((8, 10, 10), bool)
    m[2, 2:6, 2:6] = True
    m[4, 2:4, 2:4] = True
    return m


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (trace(), 1.0),
        (trace(strict=(False, True)), 0.0),
        (trace(strict=(True, False)), 0.0),
        (trace(r1_fallback=True), 0.0),
        (trace(r2_error=True), 0.0),
    ],
)
def test_format_reward(completion: Trace, expected: float) -> None:
    assert format_reward([completion]) == [expected]


@pytest.mark.parametrize(("keyframe", "expected"), [(2, 1.0), (4, 0.25), (0, 0.0), (None, 0.0)])
def test_temporal_reward(keyframe: int | None, expected: float) -> None:
    assert temporal_reward([trace(keyframe)], gt_masks=[gt()]) == [expected]


def test_temporal_reward_without_ground_truth_does_not_apply() -> None:
    assert temporal_reward([trace()], gt_masks=[None]) == [None]


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        ([[2, 2, 6, 6]], 1.0),
        ([[2, 2, 6, 4]], 0.5),  # half the box
        ([[7, 7, 9, 9]], 0.0),
        ([[2, 2, 6, 6], [7, 7, 9, 9]], 0.5),  # an extra, wrong box halves it
    ],
)
def test_spatial_reward(boxes: list[list[float]], expected: float) -> None:
    assert spatial_reward([trace(2, boxes)], gt_masks=[gt()]) == [pytest.approx(expected)]


def test_spatial_reward_matches_several_objects() -> None:
    a = np.zeros((8, 10, 10), bool)
    b = np.zeros((8, 10, 10), bool)
    a[2, 0:2, 0:2] = True
    b[2, 6:10, 6:10] = True
    # Boxes given in the other order: Hungarian matching pairs them correctly.
    completion = trace(2, [[6, 6, 10, 10], [0, 0, 2, 2]])
    assert spatial_reward([completion], gt_masks=[a | b], gt_objects=[[a, b]]) == [1.0]
    assert matched_box_iou([Box(0, 0, 2, 2)], [Box(0, 0, 2, 2), Box(6, 6, 10, 10)]) == 0.5  # missed one


def test_total_with_weights_and_gating() -> None:
    completions = [trace(4, [[2, 2, 4, 4]]), trace(4, [[2, 2, 4, 4]], strict=(False, True))]
    plain = compute_rewards(completions, RewardConfig(), gt_masks=[gt(), gt()])
    assert plain[0] == {"format": 1.0, "temporal": 0.25, "spatial": 1.0, "total": 2.25}
    assert plain[1]["total"] == 1.25
    gated = compute_rewards(completions, RewardConfig(gate_on_format=True), gt_masks=[gt(), gt()])
    assert [r["total"] for r in gated] == [2.25, 0.0]
    weighted = compute_rewards(
        completions[:1], RewardConfig(weights={"format": 0.5, "spatial": 2.0}), gt_masks=[gt()]
    )
    assert weighted[0] == {"format": 1.0, "spatial": 1.0, "total": 2.5}


def test_bad_configuration_and_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown rewards"):
        RewardConfig(weights={"style": 1.0})
    from revseg_agent.training import rewards

    monkeypatch.setitem(
        rewards.REWARDS, "temporal", lambda completions, **_: [float("nan")] * len(completions)
    )
    with pytest.raises(ValueError, match="NaN"):
        compute_rewards([trace(2)], RewardConfig(weights={"temporal": 1.0}), gt_masks=[gt()])


def one(completions: Any, **_: Any) -> list[float | None]:
    """An extra reward (TRL signature) that pays 1 to every rollout."""
    return [1.0] * len(completions)


@pytest.mark.parametrize(
    ("completion", "reward_fallbacks", "expected"),
    [
        # round 1 answered: everything counts
        (trace(2, [[2, 2, 6, 6]]), False, {"temporal": 1.0, "spatial": 1.0, "one": 1.0}),
        # round 1 fell back (middle frame, query as description): nothing downstream of it earns
        (trace(2, [[2, 2, 6, 6]], r1_fallback=True), False, {"temporal": 0.0, "spatial": 0.0, "one": 0.0}),
        # ... unless the recipe opts in (the spatial reward then scores the box on the fallback frame)
        (trace(2, [[2, 2, 6, 6]], r1_fallback=True), True, {"temporal": 0.0, "spatial": 1.0, "one": 1.0}),
        # round 2 fell back: the temporal reward stands, the box and the extras do not
        (trace(2, [[2, 2, 6, 6]], r2_error=True), False, {"temporal": 1.0, "spatial": 0.0, "one": 0.0}),
    ],
)
def test_rewards_follow_the_chain(
    completion: Trace, reward_fallbacks: bool, expected: dict[str, float]
) -> None:
    config = RewardConfig(weights={"temporal": 1.0, "spatial": 1.0}, reward_fallbacks=reward_fallbacks)
    (row,) = compute_rewards([completion], config, gt_masks=[gt()], extra={"one": one})
    assert {k: row[k] for k in expected} == expected
    assert row["total"] == pytest.approx(sum(expected.values()))


def test_extra_rewards_pass_the_same_checks_and_gates() -> None:
    broken = trace(2, [[2, 2, 6, 6]], strict=(False, True))  # format 0
    gated = compute_rewards(
        [broken],
        RewardConfig(weights={"format": 1.0}, gate_on_format=True),
        gt_masks=[gt()],
        extra={"one": one},
    )
    assert gated[0]["one"] == 0.0 and gated[0]["total"] == 0.0

    def nan(completions: Any, **_: Any) -> list[float | None]:
        return [float("nan")] * len(completions)

    with pytest.raises(ValueError, match="'nan' is NaN"):
        compute_rewards([trace()], RewardConfig(), gt_masks=[gt()], extra={"nan": nan})
    with pytest.raises(ValueError, match="name of a built-in"):
        compute_rewards([trace()], RewardConfig(), gt_masks=[gt()], extra={"format": one})
