"""`build_graph()`: the ReVSeg chain as a LangGraph `StateGraph`.

    sample_frames -> semantic_interpretation --(parsed)--> temporal_evidence_selection
                          ^        |(no parse, attempts left)        |
                          +--------+                                 v
                     spatial_grounding <-----------------------------+
                      ^        |(no usable box, attempts left)
                      +--------+
                     spatial_grounding --(boxes)--> track -> END
    any node that records an `error` ends the run (the trace holds it).

`build_graph(served=True)` (specs as context, a last `respond` step with a client-ready output)
is what `langgraph.json` serves, built in `graphs/app.py` when the server imports it (not when
`revseg_agent` is imported).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.graph import END, START, StateGraph

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.names import (
    RESPOND,
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
    if state.get("keyframe_position") is not None and state.get("description") is not None:
        return TEMPORAL_EVIDENCE_SELECTION
    return SEMANTIC_INTERPRETATION


def _after_selection(state: RevsegState) -> str:
    return END if state.get("error") else SPATIAL_GROUNDING


def _after_grounding(state: RevsegState) -> str:
    if state.get("error"):
        return END
    return TRACK if state.get("boxes") else SPATIAL_GROUNDING


def _ending_in(last: str, route: Any) -> Any:
    """`route` with END replaced by `last` (the served graph's `respond` step)."""
    return lambda state: last if (target := route(state)) == END else target


def build_graph(
    *,
    checkpointer: Any = None,
    interrupt_before: Sequence[str] | None = None,
    interrupt_after: Sequence[str] | None = None,
    name: str = "revseg",
    served: bool = False,
) -> Any:
    """Compile the ReVSeg graph. Pass a checkpointer to pause, inspect, edit and resume runs.

    `served=True` builds what a server runs: the context is a `ServedContext` (specs, JSON),
    and a last `respond` step returns a `ServedOutput` (see `graphs.served`)."""
    from revseg_agent.graphs.served import ServedContext, ServedOutput, respond

    builder: Any = StateGraph(
        RevsegState,
        context_schema=ServedContext if served else Context,
        input_schema=InputState,
        output_schema=ServedOutput if served else None,
    )
    builder.add_node(SAMPLE_FRAMES, sample_frames)
    builder.add_node(SEMANTIC_INTERPRETATION, semantic_interpretation)
    builder.add_node(TEMPORAL_EVIDENCE_SELECTION, temporal_evidence_selection)
    builder.add_node(SPATIAL_GROUNDING, spatial_grounding)
    builder.add_node(TRACK, track)
    last = END
    if served:
        builder.add_node(RESPOND, respond)
        builder.add_edge(RESPOND, END)
        last = RESPOND

    def route(fn: Any) -> Any:
        return _ending_in(last, fn) if served else fn

    builder.add_edge(START, SAMPLE_FRAMES)
    builder.add_conditional_edges(SAMPLE_FRAMES, route(_after_sampling), [SEMANTIC_INTERPRETATION, last])
    builder.add_conditional_edges(
        SEMANTIC_INTERPRETATION,
        route(_after_interpretation),
        [SEMANTIC_INTERPRETATION, TEMPORAL_EVIDENCE_SELECTION, last],
    )
    builder.add_conditional_edges(
        TEMPORAL_EVIDENCE_SELECTION, route(_after_selection), [SPATIAL_GROUNDING, last]
    )
    builder.add_conditional_edges(
        SPATIAL_GROUNDING, route(_after_grounding), [SPATIAL_GROUNDING, TRACK, last]
    )
    builder.add_edge(TRACK, last)
    return builder.compile(
        checkpointer=checkpointer,
        interrupt_before=list(interrupt_before or []),
        interrupt_after=list(interrupt_after or []),
        name=name,
    )
