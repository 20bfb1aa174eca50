"""Several runs of the graph at once, their policy calls served in batches.

Why: runs that share work (a training group's G rollouts of one sample, an evaluation's
expressions of one video) ask the policy similar things at the same moments. Run concurrently,
one thread each, through `policies.batching.BatchingPolicy`, their calls become one batched model
call per round, and they share one `FrameCache`, so the video is decoded once. The graph, its
nodes and the traces are exactly those of single runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from revseg_agent.graphs.context import Context
from revseg_agent.policies.batching import BatchingPolicy, can_batch
from revseg_agent.video import FrameCache


@dataclass(frozen=True)
class GraphRun:
    """One run: the graph's input, its context, and LangGraph's config (a thread id when the
    graph has a checkpointer)."""

    inputs: dict[str, Any]
    context: Context
    config: dict[str, Any] | None = None


def invoke_batched(
    graph: Any, runs: Sequence[GraphRun], *, sampled_alone: bool = False
) -> list[dict[str, Any]]:
    """Each run's final state (or its state at an interrupt), in order.

    `sampled_alone` serves sampled calls one by one with their own seeds (see `BatchingPolicy`):
    then every run's answers equal its answers run alone, not only its greedy ones.
    Every context must hold the same policy. A policy that cannot batch different chats (no
    `generate_batch`) runs the runs one after another, with the shared frame cache still.
    """
    if not runs:
        return []
    frames = FrameCache()
    policy = runs[0].context.policy
    if any(run.context.policy is not policy for run in runs):
        raise ValueError("runs batched together must share one policy")
    if len(runs) == 1 or not can_batch(policy):
        return [
            graph.invoke(run.inputs, run.config, context=_sharing(run.context, policy, frames))
            for run in runs
        ]
    batcher = BatchingPolicy(policy, runs=len(runs), sampled_alone=sampled_alone)  # type: ignore[arg-type]

    def one(run: GraphRun) -> dict[str, Any]:
        try:
            return graph.invoke(run.inputs, run.config, context=_sharing(run.context, batcher, frames))
        finally:
            batcher.run_finished()

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = [pool.submit(one, run) for run in runs]
        batcher.serve()  # the model runs here, on the caller's thread
        return [f.result() for f in futures]


def _sharing(context: Context, policy: Any, frames: FrameCache) -> Context:
    return dataclasses.replace(context, policy=policy, frame_cache=context.frame_cache or frames)
