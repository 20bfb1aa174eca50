"""The graph as `langgraph dev` / LangGraph Platform serve it (`langgraph.json` -> `graph`).

A served graph receives its context as JSON and is described to clients (Studio, `get_schemas`)
by JSON schemas, so:
- `ServedContext` holds specs and plain settings only (the Python API's `Context` holds live
  policy and tracker objects, which no schema can describe); nodes run on the `Context` it
  builds, made without touching the file system (the server builds it on its event loop);
- `ServedOutput` is what a client needs from a finished run: keyframe, description, boxes,
  per-frame masks as COCO RLE (the server's disk is not the client's), the chain as text, the
  error if the run stopped, and the full trace only when `include_trace` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from revseg_agent.access import allowed_dirs_from_env
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.state import RevsegState
from revseg_agent.policies.released import DEFAULT_POLICY
from revseg_agent.settings import ChainSettings


@dataclass(kw_only=True)
class ServedContext(ChainSettings):
    """The run's settings as JSON: the chain's (`ChainSettings`), the policy and tracker as specs
    (`specs`), where masks go, and whether to return the whole trace."""

    #: A hub id, a local checkpoint folder, or `served:<base url>[#<model>]`.
    policy: str = DEFAULT_POLICY
    #: `classical`, `sam2:<checkpoint>[:<config>]` or `sam2-hub:<hub id>`.
    tracker: str = "classical"
    #: Where the server writes mask files; None: a temporary folder made when first needed.
    artifacts_dir: str | None = None
    #: Return the full trace (prompts, token ids, log-probs) in the output as well.
    include_trace: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._context = Context(
            self.policy,  # specs: the nodes load them once per spec (`registry`)
            self.tracker,
            artifacts_dir=Path(self.artifacts_dir) if self.artifacts_dir is not None else None,
            allowed_dirs=allowed_dirs_from_env(),  # the server's setting, never the client's
            **self.chain_settings(),
        )

    @property
    def context(self) -> Context:
        """The run-time context the nodes use (one per run: its frame cache serves the run)."""
        return self._context


class ServedOutput(TypedDict, total=False):
    description: str
    keyframe_index: int
    keyframe_timestamp: float
    boxes: list[list[float]]
    #: One COCO RLE (`{"size": [h, w], "counts": str}`) per frame of the video.
    masks: list[dict[str, Any]]
    #: The chain as text (what `Trace.summary` prints).
    trace_summary: str
    #: Set when the run stopped: `{"node", "code", "message"}`.
    error: dict[str, Any] | None
    #: The full trace, when the context asks for it (`include_trace`).
    trace: dict[str, Any]


def respond(state: RevsegState, runtime: Runtime[Any]) -> dict[str, Any]:
    """The served run's last step: what the client receives (see `ServedOutput`)."""
    from revseg_agent.graphs.registry import run_names
    from revseg_agent.graphs.traces import Trace
    from revseg_agent.masks_io import read_masks_json

    served = runtime.context
    ctx = served.context if isinstance(served, ServedContext) else served
    policy, tracker = run_names(ctx.policy, ctx.tracker)
    trace = Trace.from_state(dict(state), policy=policy, tracker=tracker)
    out: dict[str, Any] = {"trace_summary": trace.summary(), "error": state.get("error")}
    if state.get("masks_path") and not state.get("error"):
        out["masks"] = read_masks_json(state["masks_path"]).frames  # the file's RLE, not re-encoded
    if isinstance(served, ServedContext) and served.include_trace:
        out["trace"] = trace.model_dump(mode="json")
    return out
