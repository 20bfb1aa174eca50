"""The graph's state: indices, boxes, text and paths, never pixels or tensors.

Plain JSON values only, so every LangGraph checkpointer can store it and a person can edit it
between nodes (`graph.update_state(config, {"keyframe_index": 12})`). Each node adds its trace
record to `steps`, which the reducer concatenates.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

# langgraph-api describes the state with pydantic, which needs typing_extensions' TypedDict
# on Python < 3.12
from typing_extensions import TypedDict


class InputState(TypedDict):
    video_path: str
    query: str


class RevsegState(InputState, total=False):
    # sample_frames
    num_video_frames: int
    fps: float
    frame_size: list[int]  # [height, width]
    sampled_indices: list[int]
    sampled_timestamps: list[float]
    # semantic_interpretation (round 1)
    round1_attempts: int
    round1_completion: str
    keyframe_position: int  # 0-based position among the sampled frames
    description: str
    # temporal_evidence_selection
    keyframe_index: int  # index in the original video
    keyframe_timestamp: float
    # spatial_grounding (round 2)
    round2_attempts: int
    boxes: list[list[float]]  # frame-space (x1, y1, x2, y2), see revseg_agent.types
    # track
    masks_path: str
    # bookkeeping
    steps: Annotated[list[dict[str, Any]], operator.add]
    error: dict[str, Any] | None  # {"node", "code", "message"}: the chain stopped here
    # values a person changed between nodes (graphs.edits): {"key", "old", "new", "by", "at", "before"}
    human_edits: Annotated[list[dict[str, Any]], operator.add]
