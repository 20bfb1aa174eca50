"""What a run of the chain is, declared once.

`ChainSettings` is how the chain runs whoever starts it (frames, attempts, decoding, what happens
when an answer never parses). Every way of starting a run inherits it instead of re-declaring it:
the Python API's `graphs.context.Context` (with live policy and tracker objects), the served
graph's JSON `graphs.served.ServedContext` (with specs), `RunSettings` (specs and device: the
CLI's and the UI's runs) and `eval.spec.EvalSpec` (a benchmark run any process can rebuild).
Stdlib dataclasses, so `Context(policy, tracker, num_frames=8)` reads as before and LangGraph
describes the served context's fields to clients as one flat schema.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from revseg_agent.policies.base import SamplingParams
from revseg_agent.policies.released import DEFAULT_POLICY
from revseg_agent.video import DEFAULT_NUM_FRAMES

if TYPE_CHECKING:
    from revseg_agent.graphs.context import Context

OnParseFailure = Literal["fail", "fallback"]


@dataclass(kw_only=True)
class ChainSettings:
    """How the two rounds and the tracker run.

    `on_parse_failure` decides what happens when an answer still does not parse after
    `max_attempts`: `"fail"` ends the run with a typed error recorded in the trace; `"fallback"`
    substitutes a documented default (round 1: the middle sampled frame and the query itself as
    the description; round 2: the centre box covering the middle half of the keyframe), marks the
    step with `fallback` in the trace, and carries on.
    """

    #: Frames sampled uniformly for round 1.
    num_frames: int = DEFAULT_NUM_FRAMES
    #: Attempts per round when an answer does not parse.
    max_attempts: int = 3
    #: Decoding of each round's first attempt (`max_new_tokens` None: the policy's own budget).
    sampling: SamplingParams = field(default_factory=SamplingParams)
    on_parse_failure: OnParseFailure = "fail"
    #: Round 2 continues the round-1 conversation (video, question, answer) when True, as in
    #: ReVSeg's two-round chain; when False it sees the keyframe and the grounding prompt alone.
    round2_with_history: bool = True
    #: Run the tracker at the end. Training that needs no mask reward skips it (the trace then
    #: ends with a `track` step marked skipped and no masks).
    run_tracker: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):  # JSON from a served graph's client or a Ray worker
            self.sampling = SamplingParams(**self.sampling)

    def chain_settings(self) -> dict[str, Any]:
        """These fields and their values, to build another kind of run with the same chain."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ChainSettings)}


@dataclass(kw_only=True)
class RunSettings(ChainSettings):
    """A run named by specs (`specs`): what the CLI's and the UI's options describe."""

    #: A hub id, a local checkpoint folder, `revseg-tiny`, or `served:<base url>[#<model>]`.
    policy: str = DEFAULT_POLICY
    #: `classical`, `sam2:<checkpoint>[:<config>]` or `sam2-hub:[<hub id>]`.
    tracker: str = "classical"
    #: Where the models run (None: cuda when available).
    device: str | None = None
    #: SAM2's input size (None: the checkpoint's 1024); lower saves memory.
    sam2_image_size: int | None = None

    def context(self, *, load: bool = True, **extra: Any) -> Context:
        """The graph's run-time context: the policy and tracker loaded once per spec (`registry`),
        or with `load=False` left as specs that the nodes load on first use. `extra`: the
        context's own fields (artifacts_dir, track_progress, ...)."""
        from revseg_agent.graphs.context import Context
        from revseg_agent.graphs.registry import load_policy, load_tracker

        policy: Any = load_policy(self.policy, device=self.device) if load else self.policy
        tracker: Any = load_tracker(self.tracker, self.device, self.sam2_image_size) if load else self.tracker
        return Context(policy, tracker, **self.chain_settings(), **extra)
