"""One call from a video and a query to masks and a trace: `segment(...)`.

A thin convenience over the graph for people who do not need to step through nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revseg_agent.errors import OUT_OF_MEMORY, PipelineFailure, ResourceError
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.registry import run_names
from revseg_agent.graphs.traces import Trace
from revseg_agent.masks_io import RleMaskTrack, read_masks_json


@dataclass
class SegmentationResult:
    trace: Trace
    #: The run's masks as RLE, decoded per frame on demand (`masks.frame(i)`); `masks.masks`
    #: gives the whole `(frames, H, W)` stack for short clips.
    masks: RleMaskTrack


def trace_from_state(state: dict[str, Any], context: Context) -> Trace:
    policy, tracker = run_names(context.policy, context.tracker)
    return Trace.from_state(state, policy=policy, tracker=tracker)


def raise_if_out_of_memory(trace: Trace) -> None:
    """`ResourceError` when a node ran out of memory: not the chain's failure (exit 3) nor a
    result to score or train on, but the machine's limit (exit 4), with the knob to turn."""
    if trace.error is not None and trace.error.code == OUT_OF_MEMORY:
        raise ResourceError(trace.error.message)


def result_from_state(state: dict[str, Any], context: Context) -> SegmentationResult:
    """The masks and trace of a finished run; raises `PipelineFailure` if the chain failed."""
    trace = trace_from_state(state, context)
    raise_if_out_of_memory(trace)
    if trace.error is not None or not trace.result.masks_path:
        err = trace.error
        raise PipelineFailure(
            f"{trace.error_node}: {err.message}" if err else "the run did not reach tracking",
            node=trace.error_node or "unknown",
            code=err.code if err else "incomplete",
        )
    return SegmentationResult(trace=trace, masks=read_masks_json(trace.result.masks_path))


def segment(video_path: str | Path, query: str, context: Context) -> SegmentationResult:
    """Run the whole chain on one video and query."""
    state = build_graph().invoke({"video_path": str(video_path), "query": query}, context=context)
    return result_from_state(state, context)
