"""Group rollouts run concurrently and batch their policy calls."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.policies.base import GREEDY, ChatMessage, SamplingParams
from revseg_agent.testing import BoxTracker, ScriptedPolicy
from revseg_agent.training.rollouts import run_group
from revseg_agent.video import FrameCache

# threads wait on each other here: a regression must fail fast, not hang
pytestmark = pytest.mark.timeout(120)

ROUND1 = "<think>x</think><answer>frame id: {k}\nobject description: the red square</answer>"


class CountingPolicy(ScriptedPolicy):
    """A sampling stand-in that records how the group's calls reach the model: (kind, rows) per
    model call. Like a sampled model it gives different samples: round 1's sample `i` of a call
    seeded `s` names frame `1 + (s + i) % 4`, so the group's round-2 prompts differ (each holds
    its own keyframe and answer) and must be served as one batch of different rows."""

    def __init__(self) -> None:
        super().__init__(sample_reply=_sampled_reply)
        self.threads: set[int] = set()

    def generate(self, messages, visuals, *, sampling=GREEDY, n=1):  # type: ignore[no-untyped-def]
        self.threads.add(threading.get_ident())
        return super().generate(messages, visuals, sampling=sampling, n=n)


ROUND2 = '```json\n[{{"bbox_2d": [{k}, 2, 30, 40], "label": "the red square"}}]\n```'


def _sampled_reply(messages: Sequence[ChatMessage], sampling: SamplingParams, i: int) -> str:
    if len(messages) > 2:  # round 2: a box about this run's own keyframe
        return ROUND2.format(k=_keyframe_id(messages))
    return ROUND1.format(k=1 + ((sampling.seed or 0) + i) % 4)


def _keyframe_id(messages: Sequence[ChatMessage]) -> int:
    """The frame id round 1 answered (round 2's history holds it)."""
    answer = messages[2].content[0].text  # type: ignore[union-attr]
    return int(answer.split("frame id: ")[1].split("\n")[0])


class JitteryFrameCache(FrameCache):
    """Frame reads that take a random while: the group's threads reach the policy in a
    different order each time."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._rng = random.Random(seed)

    def read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(self._rng.uniform(0, 0.05))
        return super().read(*args, **kwargs)


def _contexts(policy: CountingPolicy, tmp_path: Path, group: int) -> list[Context]:
    return [
        Context(
            policy=policy,
            tracker=BoxTracker(),
            run_tracker=False,
            artifacts_dir=tmp_path,
            max_attempts=1,
            sampling=SamplingParams(do_sample=True, seed=g),
        )
        for g in range(group)
    ]


def test_a_group_needs_two_model_calls(demo_clip: Path, tmp_path: Path) -> None:
    policy = CountingPolicy()
    states = run_group(
        build_graph(), {"video_path": str(demo_clip), "query": "q"}, _contexts(policy, tmp_path, 4)
    )
    assert len(states) == 4
    # round 1: one prompt asked 4 times -> one call with n = 4; round 2: four different prompts
    # (each run's own keyframe and answer) -> one batch of four rows
    assert policy.model_calls == [("generate", 4), ("batch", 4)]
    assert sorted(s["keyframe_position"] for s in states) == [0, 1, 2, 3]
    # each run's round-2 answer is about its own keyframe: the batch rows reached the right runs
    assert all(s["boxes"][0][0] == s["keyframe_position"] + 1 for s in states)


def test_outcomes_do_not_depend_on_thread_timing(demo_clip: Path, tmp_path: Path) -> None:
    runs = []
    for attempt in range(4):
        policy = CountingPolicy()
        contexts = [
            dataclasses.replace(c, frame_cache=JitteryFrameCache(seed=attempt))
            for c in _contexts(policy, tmp_path, 4)
        ]
        states = run_group(build_graph(), {"video_path": str(demo_clip), "query": "q"}, contexts)
        runs.append([(s["round1_completion"], s["boxes"]) for s in states])
        assert policy.model_calls == [("generate", 4), ("batch", 4)]
    assert len({completion for completion, _ in runs[0]}) == 4  # the runs really differ
    assert runs[0] == runs[1] == runs[2] == runs[3]


def test_the_model_runs_on_the_callers_thread(demo_clip: Path, tmp_path: Path) -> None:
    """torch's CPU thread pool belongs to the calling thread; serving every batch from the caller
    keeps one pool (a model called from fresh threads ran ~3x slower on 2 cores)."""
    policy = CountingPolicy()
    run_group(build_graph(), {"video_path": str(demo_clip), "query": "q"}, _contexts(policy, tmp_path, 4))
    assert policy.threads == {threading.get_ident()}


def test_the_group_decodes_each_frame_once(demo_clip: Path, tmp_path: Path) -> None:
    cache = FrameCache()
    contexts = [dataclasses.replace(c, frame_cache=cache) for c in _contexts(CountingPolicy(), tmp_path, 4)]
    states = run_group(build_graph(), {"video_path": str(demo_clip), "query": "q"}, contexts)
    wanted = set(states[0]["sampled_indices"]) | {s["keyframe_index"] for s in states}
    assert cache.decoded == len(wanted)


def test_a_failing_model_call_fails_every_run_without_hanging(demo_clip: Path, tmp_path: Path) -> None:
    class Broken(CountingPolicy):
        def generate(self, messages, visuals, *, sampling=GREEDY, n=1):  # type: ignore[no-untyped-def]
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_group(
            build_graph(), {"video_path": str(demo_clip), "query": "q"}, _contexts(Broken(), tmp_path, 4)
        )
