"""What a run of the chain is, declared once.

`ChainSettings` is how the chain runs whoever starts it (frames, attempts, decoding, what happens
when an answer never parses). Every way of starting a run inherits it instead of re-declaring it:
the Python API's `graphs.context.Context` (with live policy and tracker objects), the served
graph's JSON `graphs.served.ServedContext` (with specs), `graphs.context.RunSettings` (specs and
device: the CLI's runs) and `eval.spec.EvalSpec` (a benchmark run any process can rebuild).
Stdlib dataclasses, so `Context(policy, tracker, num_frames=8)` reads as before and LangGraph
describes the served context's fields to clients as one flat schema.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from revseg_agent.policies.base import SamplingParams
from revseg_agent.video import DEFAULT_NUM_FRAMES

OnParseFailure = Literal["fail", "fallback"]

#: Queries of one video run together at most (`graphs.video_queries`): memory grows with the
#: sessions a tracker pass holds (SAM2 keeps each query's conditioning frame and recent memories).
DEFAULT_GROUP_SIZE = 16


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
