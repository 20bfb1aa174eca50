"""Group rollouts run concurrently and batch their policy calls."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.policies.base import GREEDY, ChatMessage, SamplingParams
from revseg_agent.testing import BoxTracker, ScriptedPolicy
from revseg_agent.training.rollouts import run_group
from revseg_agent.video import FrameCache

ROUND1 = "<think>x</think><answer>frame id: {k}\nobject description: the red square</answer>"


class CountingPolicy(ScriptedPolicy):
    """Records how the group's calls reach the model: (n, batch size) per model call."""

    def __init__(self) -> None:
        answers = iter(range(1000))
        lock = threading.Lock()

        def reply(messages: Sequence[ChatMessage]) -> str:
            with lock:
                k = 1 + next(answers) % 4
            return "bbox: [1, 2, 30, 40]" if len(messages) > 2 else ROUND1.format(k=k)

        super().__init__(reply=reply)
        self.model_calls: list[tuple[str, int]] = []
        self.threads: set[int] = set()

    def generate(self, messages, visuals, *, sampling=GREEDY, n=1):  # type: ignore[no-untyped-def]
        self.threads.add(threading.get_ident())
        if not getattr(self, "_in_batch", False):
            self.model_calls.append(("generate", n))
        return super().generate(messages, visuals, sampling=sampling, n=n)

    def generate_batch(self, requests, *, sampling=GREEDY):  # type: ignore[no-untyped-def]
        self.threads.add(threading.get_ident())
        self.model_calls.append(("batch", len(requests)))
        self._in_batch = True
        try:
            return super().generate_batch(requests, sampling=sampling)
        finally:
            self._in_batch = False


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
    assert len(states) == 4 and all(s["boxes"] == [[1.0, 2.0, 30.0, 40.0]] for s in states)
    # round 1: one prompt asked 4 times -> one call with n = 4; round 2: four prompts -> one batch
    # (the fake gives one answer to a batched n = 4 call, so the four round-2 prompts coincide:
    # identical prompts are served by one n = 4 call as well).
    assert policy.model_calls in ([("generate", 4), ("batch", 4)], [("generate", 4), ("generate", 4)])


def test_outcomes_do_not_depend_on_thread_timing(demo_clip: Path, tmp_path: Path) -> None:
    runs = []
    for _ in range(3):
        policy = CountingPolicy()
        states = run_group(
            build_graph(), {"video_path": str(demo_clip), "query": "q"}, _contexts(policy, tmp_path, 4)
        )
        runs.append([s["round1_completion"] for s in states])
    assert runs[0] == runs[1] == runs[2]


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
