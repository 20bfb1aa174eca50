"""Group rollouts that share work: the G sampled runs of the graph for one training sample.

The G runs of a group execute concurrently (one thread each), and their policy calls go through
`BatchingPolicy`, which waits until every still-running member has asked, then serves them all
with as few model calls as possible: identical prompts (round 1: same frames, same query) become
one call with `n` samples, different prompts (round 2: each run's own keyframe and answer)
become one left-padded batch. Calls are ordered by content and seed, so a group's outcome does
not depend on thread timing. The graph, its nodes and the traces are exactly those of single runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from revseg_agent.graphs.context import Context
from revseg_agent.policies.base import GREEDY, ChatMessage, Generation, ImageFrame, SamplingParams, Visual


class BatchCapablePolicy(Protocol):
    @property
    def name(self) -> str: ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = ...,
        n: int = ...,
    ) -> list[Generation]: ...

    def generate_batch(
        self,
        requests: Sequence[tuple[Sequence[ChatMessage], Mapping[str, Visual]]],
        *,
        sampling: SamplingParams = ...,
    ) -> list[Generation]: ...


def fingerprint(messages: Sequence[ChatMessage], visuals: Mapping[str, Visual]) -> str:
    """Identity of a prompt: its messages and the pixels of its visuals."""
    digest = hashlib.sha1(usedforsecurity=False)
    for message in messages:
        digest.update(message.model_dump_json().encode())
    for ref in sorted(visuals):
        visual = visuals[ref]
        digest.update(ref.encode())
        frames = [visual.pixels] if isinstance(visual, ImageFrame) else list(visual.frames)
        for frame in frames:
            digest.update(np.ascontiguousarray(frame).data)
    return digest.hexdigest()


@dataclass
class _Call:
    messages: Sequence[ChatMessage]
    visuals: Mapping[str, Visual]
    sampling: SamplingParams
    key: str
    result: Generation | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def order(self) -> tuple[str, int]:
        return (self.key, self.sampling.seed if self.sampling.seed is not None else -1)


@dataclass
class BatchingPolicy:
    """Serves the concurrent policy calls of a group's runs in batches (see the module doc)."""

    inner: BatchCapablePolicy
    runs: int
    #: A batch starts early if some member has not asked for this long (a run that ended early).
    max_wait_s: float = 5.0
    model_calls: int = 0
    _queue: list[_Call] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _running: bool = False

    @property
    def name(self) -> str:
        return self.inner.name

    def run_finished(self) -> None:
        with self._cond:
            self.runs -= 1
            self._cond.notify_all()

    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = GREEDY,
        n: int = 1,
    ) -> list[Generation]:
        if n != 1:
            return self.inner.generate(messages, visuals, sampling=sampling, n=n)
        call = _Call(messages, visuals, sampling, fingerprint(messages, visuals))
        batch: list[_Call] | None = None
        with self._cond:
            self._queue.append(call)
            self._cond.notify_all()
            since = time.monotonic()
            while not call.done:
                full = len(self._queue) >= self.runs
                late = time.monotonic() - since >= self.max_wait_s
                if self._queue and not self._running and (full or late):
                    batch, self._queue, self._running = self._queue, [], True
                    break
                self._cond.wait(timeout=0.01)
        if batch is not None:
            try:
                self._serve(batch)
            except BaseException as exc:  # every waiting run must see the failure, not hang
                for c in batch:
                    if not c.done:
                        c.error = exc
            with self._cond:
                self._running = False
                self._cond.notify_all()
            with self._cond:
                while not call.done:
                    self._cond.wait(timeout=0.01)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return [call.result]

    def _serve(self, batch: list[_Call]) -> None:
        by_sampling: dict[tuple[Any, ...], list[_Call]] = {}
        for call in sorted(batch, key=_Call.order):
            s = call.sampling
            by_sampling.setdefault(
                (s.do_sample, s.temperature, s.top_p, s.top_k, s.max_new_tokens), []
            ).append(call)
        for calls in by_sampling.values():
            sampling = calls[0].sampling
            same: dict[str, list[_Call]] = {}
            for call in calls:
                same.setdefault(call.key, []).append(call)
            groups = list(same.values())
            if len(groups) == 1:  # one prompt asked k times: k samples in one call
                k = len(groups[0])
                gens = self.inner.generate(
                    groups[0][0].messages, groups[0][0].visuals, sampling=sampling, n=k
                )
                for call, gen in zip(groups[0], gens, strict=True):
                    call.result = gen
            else:  # different prompts: one row each (repeats of a prompt get their own rows)
                gens = self.inner.generate_batch([(c.messages, c.visuals) for c in calls], sampling=sampling)
                for call, gen in zip(calls, gens, strict=True):
                    call.result = gen
            self.model_calls += 1


def run_group(graph: Any, inputs: dict[str, Any], contexts: Sequence[Context]) -> list[dict[str, Any]]:
    """Run the graph once per context, concurrently, with the group's policy calls batched.

    Every context must hold the same batch-capable policy (e.g. `QwenVLPolicy`).
    """
    policy = contexts[0].policy
    batcher = BatchingPolicy(policy, runs=len(contexts))  # type: ignore[arg-type]

    def one(context: Context) -> dict[str, Any]:
        try:
            return graph.invoke(inputs, context=dataclasses.replace(context, policy=batcher))
        finally:
            batcher.run_finished()

    with ThreadPoolExecutor(max_workers=len(contexts)) as pool:
        return list(pool.map(one, contexts))
