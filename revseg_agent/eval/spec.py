"""An evaluation described by plain values, so any process can build the same runner.

Why: `revseg eval` builds its runner in the calling process; a Ray worker must build its own
(its own policy and tracker, on its own GPU) from something it can receive. `EvalSpec` is that
something: the CLI's options as a pydantic model, and `build_runner` is the one place that turns
them into an `EvalRunner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from revseg_agent.eval.runner import EvalRunner
from revseg_agent.eval.scoring import MissingRule
from revseg_agent.video import DEFAULT_NUM_FRAMES


class EvalSpec(BaseModel):
    dataset: str
    root: Path
    split: str | None = None
    out: Path
    baseline: str | None = None
    #: A policy spec (hub id, local folder, `revseg-tiny`, `served:<url>`); unused by baselines.
    policy: str | None = None
    #: A tracker spec (`classical`, `sam2:<checkpoint>[:<config>]`, `sam2-hub:[<id>]`).
    tracker: str = "classical"
    device: str | None = None
    sam2_image_size: int | None = None
    num_frames: int = DEFAULT_NUM_FRAMES
    max_attempts: int = 3
    on_parse_failure: Literal["fail", "fallback"] = "fail"
    #: None: the policy's own budget (`policies.base.token_budget`).
    max_new_tokens: int | None = None
    missing: MissingRule | None = None
    workers: int = 1

    def build_runner(self, *, load: bool = True) -> EvalRunner:
        """The runner. `load=False` leaves the policy and tracker as specs, loaded on first use
        (the coordinating process of a distributed run never runs a model)."""
        from revseg_agent.eval.datasets import open_benchmark
        from revseg_agent.graphs.context import Context
        from revseg_agent.graphs.registry import load_policy, load_tracker
        from revseg_agent.policies.base import SamplingParams

        bench = open_benchmark(self.dataset, self.root, self.split)
        tracker = load_tracker(self.tracker, self.device, self.sam2_image_size) if load else self.tracker
        if self.baseline is not None:
            return EvalRunner(
                bench,
                self.out,
                tracker=tracker,
                baseline=self.baseline,
                num_frames=self.num_frames,
                missing=self.missing,
                workers=self.workers,
            )
        if self.policy is None:
            raise ValueError("an evaluation of the graph needs a policy spec")
        policy = load_policy(self.policy, device=self.device) if load else self.policy
        context = Context(
            policy=policy,  # type: ignore[arg-type]  # a spec: nodes resolve it (registry)
            tracker=tracker,  # type: ignore[arg-type]
            num_frames=self.num_frames,
            max_attempts=self.max_attempts,
            on_parse_failure=self.on_parse_failure,
            sampling=SamplingParams(max_new_tokens=self.max_new_tokens),
        )
        return EvalRunner(bench, self.out, context=context, missing=self.missing, workers=self.workers)
