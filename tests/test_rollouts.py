"""Group rollouts run concurrently and batch their policy calls."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.policies.base import GREEDY, ChatMessage, SamplingParams
from revseg_agent.testing import BoxTracker, ScriptedPolicy
from revseg_agent.training.rollouts import run_group

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

    def generate(self, messages, visuals, *, sampling=GREEDY, n=1):  # type: ignore[no-untyped-def]
        if not getattr(self, "_in_batch", False):
            self.model_calls.append(("generate", n))
        return super().generate(messages, visuals, sampling=sampling, n=n)

    def generate_batch(self, requests, *, sampling=GREEDY):  # type: ignore[no-untyped-def]
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
