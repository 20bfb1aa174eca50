"""Traces on disk for training: JSON Lines, one rollout per line, appended atomically.

A record holds the trace (with its visuals by reference), the rollout's group, the rewards it
got and where its sample's ground truth lives (a revseg-masks JSON file: union masks plus one
stack per target object), so rewards can be recomputed later under new settings without running
any model (`revseg train rescore`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from revseg_agent.graphs.traces import Trace
from revseg_agent.io import append_jsonl, atomic_write_text, read_jsonl, safe_name
from revseg_agent.masks_io import read_masks_json, write_masks_json
from revseg_agent.training.rewards import RewardConfig, compute_rewards
from revseg_agent.types import MaskTrack


class TraceRecord(BaseModel):
    sample_id: str
    group_id: str
    index: int = 0
    step: int | None = None
    policy: str
    ground_truth: str | None = None
    trace: Trace
    rewards: dict[str, float | None] = Field(default_factory=dict)


class TraceStore:
    """An append-only JSONL file of `TraceRecord`s, with ground truth saved beside it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.gt_dir = self.path.with_suffix(".gt")

    def save_ground_truth(
        self, sample_id: str, masks: np.ndarray, objects: list[np.ndarray] | None = None
    ) -> str:
        path = self.gt_dir / f"{safe_name(sample_id)}.json"
        if not path.is_file():
            per_object = {i + 1: o for i, o in enumerate(objects or [masks])}
            write_masks_json(path, MaskTrack(masks, per_object))
        return str(path)

    def keep_steps_before(self, step: int) -> int:
        """Drop the records of step `step` and later (steps whose update a resumed run repeats,
        or a fresh run replaces); returns how many were dropped. Atomic rewrite."""
        if not self.path.is_file():
            return 0
        rows = read_jsonl(self.path)
        kept = [r for r in rows if r.get("step") is None or int(r["step"]) < step]
        if len(kept) != len(rows):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return len(rows) - len(kept)

    def append(self, record: TraceRecord) -> None:
        append_jsonl(self.path, record.model_dump(mode="json"))

    def __iter__(self) -> Iterator[TraceRecord]:
        for row in read_jsonl(self.path):
            yield TraceRecord.model_validate(row)


def rescore(records: list[TraceRecord], config: RewardConfig) -> list[TraceRecord]:
    """Recompute every record's rewards under `config`, from the stored traces and ground truth."""
    out = []
    for record in records:
        if record.ground_truth is None:
            raise ValueError(f"record {record.sample_id}/{record.index} has no ground truth to score against")
        truth = read_masks_json(record.ground_truth)  # as save_ground_truth wrote it
        masks, objects = truth.masks, list(truth.per_object.values())
        (rewards,) = compute_rewards([record.trace], config, gt_masks=[masks], gt_objects=[objects])
        out.append(record.model_copy(update={"rewards": rewards}))
    return out


def write_records(path: str | Path, records: list[TraceRecord]) -> Path:
    lines = "".join(r.model_dump_json() + "\n" for r in records)
    return atomic_write_text(path, lines)
