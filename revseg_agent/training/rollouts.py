"""Group rollouts that share work: the G sampled runs of the graph for one training sample.

The G runs of a group execute concurrently through `graphs.batched.invoke_batched`: identical
prompts (round 1: same frames, same query) become one call with `n` samples, different prompts
(round 2: each run's own keyframe and answer) one left-padded batch (`policies.batching`). The
runs share one frame cache, so the video is decoded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from revseg_agent.errors import (
    MEMORY_KNOBS,
    OUT_OF_MEMORY,
    ResourceError,
    is_out_of_memory,
    out_of_memory_message,
)
from revseg_agent.graphs.batched import GraphRun, invoke_batched
from revseg_agent.graphs.context import Context


def run_group(graph: Any, inputs: dict[str, Any], contexts: Sequence[Context]) -> list[dict[str, Any]]:
    """Run the graph once per context, concurrently, with the group's policy calls batched.

    Every context must hold the same batch-capable policy (e.g. `QwenVLPolicy`).
    """
    try:
        states = invoke_batched(graph, [GraphRun(inputs, context) for context in contexts])
    except Exception as exc:
        if is_out_of_memory(exc):
            raise ResourceError(out_of_memory_message("rollouts", exc)) from exc
        raise
    for state in states:  # a rollout that ran out of memory is no sample to learn from
        error = state.get("error") or {}
        if error.get("code") == OUT_OF_MEMORY:
            raise ResourceError(f"{error.get('message')}; in training: {MEMORY_KNOBS['rollouts']}")
    return states
