"""`build_graph()`: the ReVSeg chain as a LangGraph `StateGraph`.

    sample_frames -> semantic_interpretation --(parsed)--> temporal_evidence_selection
                          ^        |(no parse, attempts left)        |
                          +--------+                                 v
                     spatial_grounding <-----------------------------+
                      ^        |(no usable box, attempts left)
                      +--------+
                     spatial_grounding --(boxes)--> track -> END
    any node that records an `error` ends the run (the trace holds it).

`graph` (compiled without a checkpointer) is what `langgraph.json` serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.names import (
    SAMPLE_FRAMES,
    SEMANTIC_INTERPRETATION,
    SPATIAL_GROUNDING,
    TEMPORAL_EVIDENCE_SELECTION,
    TRACK,
)
from revseg_agent.graphs.nodes import (
    sample_frames,
    semantic_interpretation,
    spatial_grounding,
    temporal_evidence_selection,
    track,
)
from revseg_agent.graphs.state import InputState, RevsegState


def _after_sampling(state: RevsegState) -> str:
    return END if state.get("error") else SEMANTIC_INTERPRETATION


def _after_interpretation(state: RevsegState) -> str:
    if state.get("error"):
        return END
    if state.get("description") is not None and state.get("keyframe_position") is not None:
        return TEMPORAL_EVIDENCE_SELECTION
    return SEMANTIC_INTERPRETATION


def _after_selection(state: RevsegState) -> str:
    return END if state.get("error") else SPATIAL_GROUNDING


def _after_grounding(state: RevsegState) -> str:
    if state.get("error"):
        return END
    return TRACK if state.get("boxes") else SPATIAL_GROUNDING


def build_graph(
    *,
    checkpointer: Any = None,
    interrupt_before: Sequence[str] | None = None,
    interrupt_after: Sequence[str] | None = None,
    name: str = "revseg",
) -> Any:
    """Compile the ReVSeg graph. Pass a checkpointer to pause, inspect, edit and resume runs."""
    builder = StateGraph(RevsegState, context_schema=Context, input_schema=InputState)
    builder.add_node(SAMPLE_FRAMES, sample_frames)
    builder.add_node(SEMANTIC_INTERPRETATION, semantic_interpretation)
    builder.add_node(TEMPORAL_EVIDENCE_SELECTION, temporal_evidence_selection)
    builder.add_node(SPATIAL_GROUNDING, spatial_grounding)
    builder.add_node(TRACK, track)
    builder.add_edge(START, SAMPLE_FRAMES)
    builder.add_conditional_edges(SAMPLE_FRAMES, _after_sampling, [SEMANTIC_INTERPRETATION, END])
    builder.add_conditional_edges(
        SEMANTIC_INTERPRETATION,
        _after_interpretation,
        [SEMANTIC_INTERPRETATION, TEMPORAL_EVIDENCE_SELECTION, END],
    )
    builder.add_conditional_edges(TEMPORAL_EVIDENCE_SELECTION, _after_selection, [SPATIAL_GROUNDING, END])
    builder.add_conditional_edges(SPATIAL_GROUNDING, _after_grounding, [SPATIAL_GROUNDING, TRACK, END])
    builder.add_edge(TRACK, END)
    return builder.compile(
        checkpointer=checkpointer,
        interrupt_before=list(interrupt_before or []),
        interrupt_after=list(interrupt_after or []),
        name=name,
    )


graph = build_graph()
