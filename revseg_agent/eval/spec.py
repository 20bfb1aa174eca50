"""An evaluation described by plain values, so any process can build the same runner.

Why: `revseg eval` builds its runner in the calling process; a Ray worker must build its own
(its own policy and tracker, on its own GPU) from something it can receive. `EvalSpec` is that
something: the CLI's options as a pydantic model, and `build_runner` is the one place that turns
them into an `EvalRunner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from revseg_agent.eval.runner import EvalRunner
from revseg_agent.eval.scoring import MissingRule
from revseg_agent.graphs.context import RunSettings
from revseg_agent.settings import DEFAULT_GROUP_SIZE


@dataclass(kw_only=True)
class EvalSpec(RunSettings):
    """A benchmark split run with `RunSettings` (the policy is unused by a `baseline`)."""

    dataset: str
    root: Path
    split: str | None = None
    out: Path
    #: oracle, random-keyframe or centre-box: skip the policy (`eval.diagnostics`).
    baseline: str | None = None
    missing: MissingRule | None = None
    workers: int = 1
    #: Each expression alone instead of a video's expressions together (for comparison).
    per_expression: bool = False
    #: A video's expressions run together at most (policy batches and one tracker pass).
    group_size: int = DEFAULT_GROUP_SIZE

    def __post_init__(self) -> None:
        super().__post_init__()
        self.root, self.out = Path(self.root), Path(self.out)

    def to_json(self) -> dict[str, Any]:
        """Plain values another process rebuilds the same spec from (`from_json`)."""
        return TypeAdapter(EvalSpec).dump_python(self, mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalSpec:
        return TypeAdapter(EvalSpec).validate_python(data)

    def build_runner(self, *, load: bool = True) -> EvalRunner:
        """The runner. `load=False` leaves the policy and tracker as specs, loaded on first use
        (the coordinating process of a distributed run never runs a model)."""
        from revseg_agent.eval.datasets import open_benchmark
        from revseg_agent.graphs.registry import load_tracker

        bench = open_benchmark(self.dataset, self.root, self.split)
        if self.baseline is not None:
            tracker = load_tracker(self.tracker, self.device, self.sam2_image_size) if load else self.tracker
            return EvalRunner(
                bench,
                self.out,
                tracker=tracker,
                baseline=self.baseline,
                num_frames=self.num_frames,
                missing=self.missing,
                workers=self.workers,
                per_expression=self.per_expression,
                group_size=self.group_size,
            )
        return EvalRunner(
            bench,
            self.out,
            context=self.context(load=load),
            missing=self.missing,
            workers=self.workers,
            per_expression=self.per_expression,
            group_size=self.group_size,
        )
