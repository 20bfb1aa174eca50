"""Traces: the record of one graph run, step by step (pydantic, JSON on disk, never pixels).

A trace is what evaluation reports, what training replays and what rewards score. Each step
keeps the messages with visuals by reference (video path + frame indices), the completion text,
prompt and completion token ids, sampling-time log-probs, the parsed result or parse error, and
timings. Steps live in the graph state as plain dicts (so every checkpointer stores them) and are
validated into `StepRecord` when a `Trace` is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from revseg_agent.graphs.names import NodeName
from revseg_agent.io import atomic_write_text
from revseg_agent.policies.base import ChatMessage

TRACE_VERSION = 1


class VisualRecord(BaseModel):
    """Where a visual came from: frames of a video file or frame folder, by original index."""

    kind: Literal["video", "image"]
    video_path: str
    frame_indices: list[int]
    fps: float | None = None
    total_num_frames: int | None = None


class StepError(BaseModel):
    code: str
    message: str


class StepRecord(BaseModel):
    node: NodeName
    attempt: int = 1
    messages: list[ChatMessage] = Field(default_factory=list)
    visuals: dict[str, VisualRecord] = Field(default_factory=dict)
    completion: str | None = None
    prompt_ids: list[int] = Field(default_factory=list)
    completion_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    #: `(height, width)` of each image / video frame as the model saw it.
    model_image_sizes: list[tuple[int, int]] = Field(default_factory=list)
    parsed: dict[str, Any] | None = None
    error: StepError | None = None
    #: Set when a documented fallback replaced an answer that never parsed.
    fallback: str | None = None
    started_at: float
    duration_s: float

    def to_state(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class HumanEdit(BaseModel):
    """A value a person changed between nodes (see `graphs.edits`)."""

    key: str
    old: Any = None
    new: Any = None
    by: str = "person"
    at: float
    #: The node(s) that were to run next when the edit was made.
    before: list[str] = Field(default_factory=list)


class TraceResult(BaseModel):
    description: str | None = None
    keyframe_index: int | None = None
    keyframe_timestamp: float | None = None
    boxes: list[list[float]] | None = None
    masks_path: str | None = None


class Trace(BaseModel):
    version: int = TRACE_VERSION
    video_path: str
    query: str
    policy: str
    tracker: str
    num_video_frames: int | None = None
    sampled_indices: list[int] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    result: TraceResult = Field(default_factory=TraceResult)
    error: StepError | None = None
    error_node: str | None = None
    human_edits: list[HumanEdit] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.result.masks_path is not None

    @classmethod
    def from_state(cls, state: dict[str, Any], *, policy: str, tracker: str) -> Trace:
        error = state.get("error")
        return cls(
            video_path=state["video_path"],
            query=state["query"],
            policy=policy,
            tracker=tracker,
            num_video_frames=state.get("num_video_frames"),
            sampled_indices=state.get("sampled_indices") or [],
            steps=[StepRecord.model_validate(s) for s in state.get("steps", [])],
            result=TraceResult(
                description=state.get("description"),
                keyframe_index=state.get("keyframe_index"),
                keyframe_timestamp=state.get("keyframe_timestamp"),
                boxes=state.get("boxes"),
                masks_path=state.get("masks_path"),
            ),
            error=StepError(code=error["code"], message=error["message"]) if error else None,
            error_node=error.get("node") if error else None,
            human_edits=[HumanEdit.model_validate(e) for e in state.get("human_edits", [])],
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def final_step(self, node: str) -> StepRecord | None:
        """The node's last attempt (the one the chain went on with); None when not reached."""
        steps = [s for s in self.steps if s.node == node]
        return steps[-1] if steps else None

    def summary(self) -> str:
        """A readable account of the chain, for people."""
        lines = [f"query: {self.query}", f"video: {self.video_path}"]
        for step in self.steps:
            head = f"[{step.node}#{step.attempt}] {step.duration_s * 1000:.0f} ms"
            if step.error:
                lines.append(f"{head} error {step.error.code}: {step.error.message}")
            if step.fallback:
                lines.append(f"{head} fallback: {step.fallback}")
            if step.parsed and not step.error:
                lines.append(f"{head} {json.dumps(step.parsed)}")
            if step.parsed and step.parsed.get("think"):
                lines.append(f"    thinking: {step.parsed['think']}")
        for edit in self.human_edits:
            lines.append(f"edited by {edit.by}: {edit.key} {json.dumps(edit.old)} -> {json.dumps(edit.new)}")
        if self.error:
            lines.append(f"FAILED at {self.error_node}: {self.error.code}: {self.error.message}")
        return "\n".join(lines)
