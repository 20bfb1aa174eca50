"""Group rollouts share the round-1 generation of a group."""

from __future__ import annotations

from pathlib import Path

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.policies.base import SamplingParams
from revseg_agent.testing import BoxTracker, ScriptedPolicy
from revseg_agent.training.rollouts import GroupPolicy

ROUND1 = "<think>x</think><answer>frame id: 1\nobject description: the red square</answer>"


def test_a_group_makes_one_batched_round1_call(demo_clip: Path, tmp_path: Path) -> None:
    answers = iter(range(100))

    def reply(messages: list) -> str:  # type: ignore[type-arg]
        # round 2 answers a fixed box; round 1 names a different frame each time (as sampling would)
        return (
            "bbox: [1, 2, 30, 40]"
            if len(messages) > 2
            else ROUND1.replace("1", str(1 + next(answers) % 4), 1)
        )

    inner = ScriptedPolicy(reply=reply)
    group = GroupPolicy(inner, group_size=4)
    graph = build_graph()
    for g in range(4):
        context = Context(
            policy=group,
            tracker=BoxTracker(),
            run_tracker=False,
            artifacts_dir=tmp_path,
            sampling=SamplingParams(do_sample=True, seed=g),
            max_attempts=1,
        )
        state = graph.invoke({"video_path": str(demo_clip), "query": "the square"}, context=context)
        assert state["boxes"] == [[1.0, 2.0, 30.0, 40.0]]
        assert [s["node"] for s in state["steps"]][-1] == "track"
    round1 = [c for c in inner.calls if len(c.messages) == 2]
    round2 = [c for c in inner.calls if len(c.messages) > 2]
    assert [c.n for c in round1] == [1, 3]  # the first run alone, then one batch for the other three
    # Round-2 prompts depend on each run's answer: new ones are asked alone; one that repeats (the
    # fake repeats its batched answer, so runs 3 and 4 share a prompt) is batched like round 1.
    assert [c.n for c in round2] == [1, 1, 3]


def test_greedy_calls_pass_through(demo_clip: Path, tmp_path: Path) -> None:
    inner = ScriptedPolicy(reply=lambda m: "bbox: [1, 2, 30, 40]" if len(m) > 2 else ROUND1)
    group = GroupPolicy(inner, group_size=4)
    context = Context(policy=group, tracker=BoxTracker(), run_tracker=False, artifacts_dir=tmp_path)
    for _ in range(2):
        build_graph().invoke({"video_path": str(demo_clip), "query": "q"}, context=context)
    assert [c.n for c in inner.calls] == [1, 1, 1, 1] and group.batched_calls == 0
