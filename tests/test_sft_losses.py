"""Supervised warm start: a tiny policy learns to answer both rounds in the graph's format."""

from __future__ import annotations

from pathlib import Path

import pytest

from revseg_agent.app.cli import main
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.pipeline import trace_from_state
from revseg_agent.policies.base import SamplingParams
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.testing import BoxTracker
from revseg_agent.training.data import generated_samples
from revseg_agent.training.recipe import GeneratedData
from revseg_agent.training.sft import round1_target, round2_target
from revseg_agent.types import Box

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_targets_are_what_the_graph_parses() -> None:
    from revseg_agent.parsing import parse_box_answer, parse_keyframe_answer

    answer = parse_keyframe_answer(round1_target("the red square", 2), 4)
    assert answer.position == 2 and answer.description == "the red square" and answer.strict_format  # type: ignore[union-attr]
    boxes = parse_box_answer(round2_target([Box(1.4, 2.6, 30.2, 40.0)], "the red square"))
    assert [b.to_list() for b in boxes.boxes] == [[1.0, 3.0, 30.0, 40.0]] and boxes.strict_format  # type: ignore[union-attr]


def test_targets_carry_the_evidence_and_one_box_per_target() -> None:
    """The synthetic world's description and evidence shape round 1; round 2 boxes every target."""
    from revseg_agent.parsing import parse_box_answer, parse_keyframe_answer

    target = round1_target(
        "the fastest shape", 1, "the red circle", "The red circle moves faster than the others."
    )
    answer = parse_keyframe_answer(target, 4)
    assert answer.description == "the red circle" and answer.strict_format  # type: ignore[union-attr]
    assert "The red circle moves faster than the others." in answer.think  # type: ignore[union-attr]
    boxes = parse_box_answer(
        round2_target([Box(1, 2, 10, 12), Box(20, 22, 30, 32)], "the red circle and the blue square")
    )
    assert len(boxes.boxes) == 2 and boxes.strict_format  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("areas", "first", "middle"),
    [
        ([5, 5, 5, 5, 5, 5, 5, 5], 0, 4),  # constant size: every frame ties
        ([1, 9, 9, 2, 2, 2, 2, 2], 1, 2),  # the tied frame nearer the middle
        ([9, 1, 1, 1, 1, 1, 1, 9], 0, 7),  # as near as each other: the later
        ([1, 2, 3, 9, 9, 1, 1, 1], 3, 4),
        ([1, 2, 3, 4, 5, 6, 7, 8], 7, 7),  # one largest: no choice
        ([0, 0, 3, 3, 3, 0, 0, 0], 2, 4),
    ],
)
def test_keyframe_ties_pick_the_first_or_the_middle_largest_frame(
    areas: list[int], first: int, middle: int
) -> None:
    import numpy as np

    from revseg_agent.eval.diagnostics import best_sampled_position

    gt = np.zeros((16, 3, 3), bool)
    sampled = list(range(0, 16, 2))
    for k, area in zip(sampled, areas, strict=True):
        gt[k].flat[:area] = True
    assert best_sampled_position(gt, sampled) == first  # the default, as before
    assert best_sampled_position(gt, sampled, ties="first") == first
    assert best_sampled_position(gt, sampled, ties="middle") == middle


@pytest.mark.parametrize(("ties", "position"), [("first", 0), ("middle", 2)])
def test_the_supervised_keyframe_follows_keyframe_ties(tmp_path: Path, ties: str, position: int) -> None:
    """The red square has one size on every frame: round 1 is taught the first of the 4 sampled
    frames or the one nearest their middle, and round 2 boxes the square on that frame."""
    from revseg_agent.parsing import parse_keyframe_answer
    from revseg_agent.training.sft import chain_example
    from revseg_agent.video import open_video

    sample = generated_samples(tmp_path, GeneratedData(num_samples=1, num_frames=6))[0]
    example = chain_example(sample, 4, keyframe_ties=ties)  # type: ignore[arg-type]
    answer = parse_keyframe_answer(example.answer1, 4)
    assert answer.position == position  # type: ignore[union-attr]
    masks, _ = sample.truth()
    key = open_video(sample.video_path).sample(4).indices[position]
    assert example.boxes == (Box.from_mask(masks[key]),)


def test_sft_teaches_the_format_then_the_graph_parses_both_rounds(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    assert (
        main(
            [
                "train",
                "sft",
                "--config",
                str(RECIPES / "tiny-cpu-sft.yaml"),
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    policy = QwenVLPolicy.from_pretrained(out / "policy", device="cpu")  # the saved checkpoint loads
    sample = generated_samples(tmp_path / "clips", GeneratedData(num_samples=1, num_frames=8, seed=5))[0]
    context = Context(
        policy=policy,
        tracker=BoxTracker(),
        num_frames=4,
        max_attempts=1,
        run_tracker=False,
        sampling=SamplingParams(max_new_tokens=80),
        artifacts_dir=tmp_path,
    )
    state = build_graph().invoke({"video_path": sample.video_path, "query": sample.query}, context=context)
    trace = trace_from_state(state, context)
    rounds = [s for s in trace.steps if s.node in ("semantic_interpretation", "spatial_grounding")]
    assert [s.error for s in rounds] == [None, None], trace.summary()
    assert all(s.parsed and s.parsed["strict_format"] for s in rounds)
