"""`BatchingPolicy`: the concurrent policy calls of several runs of the graph, served in batches.

Runs that share work (a training group's G rollouts of one sample; an evaluation's expressions of
one video) execute concurrently, one thread each, and call the policy through `BatchingPolicy`. It
waits until every still-running member has asked, then serves them all with as few model calls as
possible: identical prompts become one call with `n` samples, different prompts (each query's own
question on the same video, each run's own keyframe) one left-padded batch. Calls are ordered by
content and seed, so the outcome does not depend on thread timing.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from revseg_agent.parsing import BoxUnits
from revseg_agent.policies.base import (
    GREEDY,
    ChatMessage,
    Generation,
    SamplingParams,
    Visual,
    box_units,
    feeds_token_ids,
)
from revseg_agent.policies.qwen_inputs import visuals_fingerprint


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
    refs = sorted(visuals)
    digest.update(json.dumps(refs).encode())
    digest.update(visuals_fingerprint([visuals[ref] for ref in refs]).encode())
    return digest.hexdigest()


@dataclass
class _Call:
    messages: Sequence[ChatMessage]
    visuals: Mapping[str, Visual]
    sampling: SamplingParams
    key: str
    n: int = 1
    results: list[Generation] | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.results is not None or self.error is not None

    def order(self) -> tuple[str, int]:
        return (self.key, self.sampling.seed if self.sampling.seed is not None else -1)


@dataclass
class BatchingPolicy:
    """Serves the concurrent policy calls of a group's runs in batches (see the module doc).

    The runs call `generate` from their own threads and wait; `serve` runs the model on the
    thread that called it (torch's CPU thread pool belongs to the calling thread: a model
    called from fresh threads ran about 3x slower on 2 cores, measured).
    """

    inner: BatchCapablePolicy
    runs: int
    #: Serve each sampled call on its own, with its own seed, so it draws exactly what it would
    #: draw unbatched (an evaluation's seeded retries: the same answers grouped or alone).
    #: A training group leaves it off: its samples are merged into batches, and what they draw
    #: depends on the group (deterministically: calls are ordered by content and seed).
    sampled_alone: bool = False
    model_calls: int = 0
    _queue: list[_Call] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _failed: BaseException | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def feeds_token_ids(self) -> bool:
        return feeds_token_ids(self.inner)

    @property
    def box_units(self) -> BoxUnits:
        return box_units(self.inner)

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
        call = _Call(messages, visuals, sampling, fingerprint(messages, visuals), n)
        with self._cond:
            if self._failed is not None:
                raise self._failed
            self._queue.append(call)
            self._cond.notify_all()
            while not call.done:
                self._cond.wait()
        if call.error is not None:
            raise call.error
        assert call.results is not None
        return call.results

    def serve(self) -> None:
        """Serve batches on this thread until every run has finished."""
        try:
            while True:
                with self._cond:
                    # A batch is every still-running member's request: decided by what the runs
                    # asked, never by a clock, so the same group gives the same batches on any
                    # machine (a run busy elsewhere, e.g. tracking, is waited for).
                    while not (self._queue and len(self._queue) >= self.runs):
                        if self.runs <= 0 and not self._queue:
                            return
                        self._cond.wait()
                    batch, self._queue = self._queue, []
                try:
                    self._serve(batch)
                except Exception as exc:  # every waiting run must see the failure, not hang
                    for c in batch:
                        if not c.done:
                            c.error = exc
                with self._cond:
                    self._cond.notify_all()
        except BaseException as exc:  # e.g. KeyboardInterrupt: release every waiting run
            with self._cond:
                self._failed = exc
                for c in self._queue:
                    c.error = exc
                self._queue = []
                self._cond.notify_all()
            raise

    def _serve(self, batch: list[_Call]) -> None:
        by_sampling: dict[tuple[Any, ...], list[_Call]] = {}
        for call in sorted(batch, key=_Call.order):
            if call.n != 1 or (self.sampled_alone and call.sampling.do_sample):
                # a run asking for several samples itself, or a draw that must equal its draw
                # alone, is served on its own
                call.results = self.inner.generate(
                    call.messages, call.visuals, sampling=call.sampling, n=call.n
                )
                self.model_calls += 1
                continue
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
                    call.results = [gen]
            else:  # different prompts: one row each (repeats of a prompt get their own rows)
                gens = self.inner.generate_batch([(c.messages, c.visuals) for c in calls], sampling=sampling)
                for call, gen in zip(calls, gens, strict=True):
                    call.results = [gen]
            self.model_calls += 1


def can_batch(policy: Any) -> bool:
    """Whether `policy` serves several different chats in one call (`generate_batch`)."""
    return callable(getattr(policy, "generate_batch", None))
