"""Group rollouts that share work: G sampled runs of the graph for one training sample.

The G rollouts of a group see the same round-1 prompt (same frames, same query), so instead of
G round-1 generations, `GroupPolicy` makes one batched call for G samples and hands them out,
one per graph run. Each run then continues on its own (round 2 depends on its keyframe). The
graph, its nodes and the traces are exactly those of single runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from revseg_agent.policies.base import (
    GREEDY,
    ChatMessage,
    Generation,
    ImageFrame,
    Policy,
    SamplingParams,
    Visual,
)


def _fingerprint(
    messages: Sequence[ChatMessage], visuals: Mapping[str, Visual], sampling: SamplingParams
) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for message in messages:
        digest.update(message.model_dump_json().encode())
    for ref in sorted(visuals):
        visual = visuals[ref]
        digest.update(ref.encode())
        frames = [visual.pixels] if isinstance(visual, ImageFrame) else list(visual.frames)
        for frame in frames:
            digest.update(np.ascontiguousarray(frame).data)
    digest.update(
        repr((sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_new_tokens)).encode()
    )
    return digest.hexdigest()


class GroupPolicy:
    """Wraps a policy for the `group_size` runs of one group.

    The first sampled call with a prompt generates one completion (most prompts, like round 2's,
    are never asked again); when the same prompt comes a second time (round 1 of the next run),
    the remaining `group_size - 1` completions are generated in one batch and handed out to
    the following runs.
    """

    def __init__(self, inner: Policy, group_size: int) -> None:
        self.inner = inner
        self.group_size = group_size
        self._seen: dict[str, int] = {}
        self._pending: dict[str, list[Generation]] = {}
        self.batched_calls = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = GREEDY,
        n: int = 1,
    ) -> list[Generation]:
        if not sampling.do_sample or n != 1:
            return self.inner.generate(messages, visuals, sampling=sampling, n=n)
        key = _fingerprint(messages, visuals, sampling)
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        if seen == 0:
            return self.inner.generate(messages, visuals, sampling=sampling, n=1)
        pending = self._pending.get(key)
        if not pending:
            remaining = max(self.group_size - seen, 1)
            pending = self.inner.generate(messages, visuals, sampling=sampling, n=remaining)
            self.batched_calls += 1
        self._pending[key] = pending[1:]
        return [pending[0]]
