"""Several queries on one video, the work they share done once.

Why: a benchmark asks ~16 (MeViS) to ~34 (ReVOS) questions of every video, and a person often
asks several of one clip. Run alone, each query decodes the video again, asks the policy on its
own, and runs the tracker's image encoder over every frame again. Here the queries of a video run
the graph together: frames decoded once (one `FrameCache`), each round's policy calls batched
(`graphs.batched`), and every query's keyframe boxes propagated in one tracker pass
(`tools.base.stream_group`: SAM2 encodes each frame once for all of them). Each query's graph,
nodes and trace are those of a run alone: the graph pauses before `track`, the pass runs, and each
run's track step is recorded as the node would have (`graph.update_state(..., as_node=TRACK)`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from revseg_agent.graphs.batched import GraphRun, invoke_batched
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.names import TRACK
from revseg_agent.graphs.nodes import track_prompt, tracked
from revseg_agent.graphs.registry import resolve_tracker
from revseg_agent.masks_io import MaskStreamWriter
from revseg_agent.settings import DEFAULT_GROUP_SIZE
from revseg_agent.tools.base import TrackPrompt, stream_group
from revseg_agent.video import FrameCache


def run_queries(
    video_path: str | Path,
    queries: Sequence[str],
    context: Context,
    *,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> list[dict[str, Any]]:
    """Each query's final graph state, in order, as `graph.invoke` would return it for that query
    alone. `group_size` queries share a pass (policy batches and one tracker pass); more are
    split into consecutive groups."""
    if group_size < 1:
        raise ValueError(f"group_size must be at least 1, got {group_size}")
    context = dataclasses.replace(context, frame_cache=context.frame_cache or FrameCache())
    graph = build_graph(
        checkpointer=InMemorySaver(), interrupt_before=[TRACK] if context.run_tracker else None
    )
    states: list[dict[str, Any]] = []
    for start in range(0, len(queries), group_size):
        runs = [
            GraphRun(
                {"video_path": str(video_path), "query": query},
                context,
                {"configurable": {"thread_id": str(start + i)}},
            )
            for i, query in enumerate(queries[start : start + group_size])
        ]
        invoke_batched(graph, runs, sampled_alone=True)  # a retry draws what it draws alone
        if context.run_tracker:
            _track_together(graph, runs, context)
        states.extend(dict(graph.get_state(run.config).values) for run in runs)
    return states


def _track_together(graph: Any, runs: Sequence[GraphRun], context: Context) -> None:
    """The track step of every run paused before it, with one tracker pass."""
    started = time.time()
    pending: list[tuple[GraphRun, dict[str, Any], TrackPrompt]] = []
    for run in runs:
        snapshot = graph.get_state(run.config)
        if tuple(snapshot.next) != (TRACK,):
            continue  # ended before tracking (an error the trace records)
        state = dict(snapshot.values)
        prompt = track_prompt(state, started)  # type: ignore[arg-type]
        if isinstance(prompt, TrackPrompt):
            pending.append((run, state, prompt))
        else:
            graph.update_state(run.config, prompt, as_node=TRACK)
    if not pending:
        return
    tracker = resolve_tracker(context.tracker)
    first = pending[0][1]
    video = context.open_video(first["video_path"], fps=first["fps"])
    writers = [MaskStreamWriter(video.num_frames, video.info.height, video.info.width) for _ in pending]
    prompts = [prompt for _, _, prompt in pending]
    for i, frame in stream_group(tracker, video, prompts, progress=context.track_progress):
        writers[i].add(frame)
    for (run, state, prompt), writer in zip(pending, writers, strict=True):
        update = tracked(state, context, prompt, tracker.name, writer, started)  # type: ignore[arg-type]
        graph.update_state(run.config, update, as_node=TRACK)
