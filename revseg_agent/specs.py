"""Policy and tracker specs: the short texts a CLI flag, a recipe, a served graph's JSON context
or the UI names a model by, parsed in this one place into typed values.

- policy: anything `from_pretrained` takes (hub id or local folder), a packaged checkpoint
  (`revseg-tiny`, `revseg-tiny-sft`), or `served:<base url>[#<model>]` for a model behind an
  OpenAI-compatible server (vLLM, SGLang, `transformers serve`);
- tracker: `classical`, `sam2:<checkpoint path>[:<config name>]` or `sam2-hub:[<hub id>]`.

The name a trace records for a model loaded from a spec is the spec as written (`PolicySpec.name`):
the CLI, the served graph, evaluation and training all record `revseg-tiny`, never its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from revseg_agent.errors import CheckpointError, InputError

SERVED_PREFIX = "served:"
#: `served:transformers+http://...` names a `transformers serve` endpoint.
TRANSFORMERS_SERVE = "transformers+"
#: The tiny policy trained on the synthetic world, shipped inside the package (Hugging Face layout):
#: the step-2500 save of `recipes/revseg-tiny-chain.yaml` (docs/synthetic-world.md).
REVSEG_TINY = "revseg-tiny"
#: The supervised warm start of the current world's recipe (`recipes/revseg-tiny-sft.yaml`, its
#: step-3250 save): where `recipes/revseg-tiny-grpo.yaml` starts, shipped so GRPO runs from a clone.
REVSEG_TINY_SFT = "revseg-tiny-sft"
PACKAGED_POLICIES = (REVSEG_TINY, REVSEG_TINY_SFT)

PolicyKind = Literal["served", "packaged", "checkpoint"]
TrackerKind = Literal["classical", "sam2", "sam2-hub"]


@dataclass(frozen=True)
class PolicySpec:
    """A policy named by text; `kind` says how it loads."""

    text: str

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        text = str(text).strip()
        if not text:
            raise InputError("the policy spec is empty: give a hub id, a local folder or served:<url>")
        return cls(text)

    @property
    def kind(self) -> PolicyKind:
        if self.text.startswith(SERVED_PREFIX):
            return "served"
        return "packaged" if self.text in PACKAGED_POLICIES else "checkpoint"

    @property
    def served(self) -> bool:
        """Behind a server: no weights here (training cannot replay it)."""
        return self.kind == "served"

    @property
    def name(self) -> str:
        """What a trace records for this policy (and the name of the policy loaded from it): the
        spec as written; for a served model named in the spec, `<model> @ <base url>`."""
        if not self.served:
            return self.text
        url, _, model = self.text.removeprefix(SERVED_PREFIX).partition("#")
        if not model:  # the server's first model: known once asked
            return self.text
        return f"{model} @ {url.removeprefix(TRANSFORMERS_SERVE).rstrip('/')}"

    @staticmethod
    def name_of(text: str) -> str:
        """`parse(text).name`, or the text as written when it does not parse (its run failed)."""
        try:
            return PolicySpec.parse(text).name
        except InputError:
            return text

    def source(self) -> str:
        """What `from_pretrained` loads: a packaged checkpoint's folder inside the installation,
        else the hub id or folder as given (not for served specs)."""
        if self.kind == "served":
            raise ValueError(f"{self.text} is served: it has no checkpoint to load here")
        if self.kind == "checkpoint":
            return self.text
        from importlib import resources

        folder = Path(str(resources.files("revseg_agent"))) / "assets" / self.text
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"the {self.text} checkpoint is not part of this installation ({folder})")
        return str(folder)

    def local_paths(self) -> list[str]:
        """The files on this machine loading it would read (for `Context.allowed_dirs`): a local
        checkpoint folder; none for hub ids, packaged names or servers."""
        if self.kind != "checkpoint":
            return []
        from revseg_agent.policies.qwen import looks_local

        return [self.text] if looks_local(self.text) else []


@dataclass(frozen=True)
class TrackerSpec:
    """A tracker named by text (see the module docstring), or built from the CLI's options."""

    kind: TrackerKind
    #: `sam2`: the checkpoint file and (optional) config name.
    checkpoint: str | None = None
    config: str | None = None
    #: `sam2-hub`: the hub id (None: the default SAM2.1 checkpoint).
    hub_id: str | None = None

    @classmethod
    def parse(cls, text: str) -> TrackerSpec:
        kind, _, rest = str(text).partition(":")
        if kind == "classical" and not rest:
            return cls("classical")
        if kind == "sam2-hub":
            return cls("sam2-hub", hub_id=rest or None)
        if kind == "sam2":
            checkpoint, _, config = rest.partition(":")
            if not checkpoint:
                raise InputError("a sam2 tracker spec needs a checkpoint: sam2:<path>[:<config>]")
            return cls("sam2", checkpoint=checkpoint, config=config or None)
        raise InputError(f"unknown tracker spec {text!r}: use classical, sam2:<checkpoint> or sam2-hub:<id>")

    @classmethod
    def from_options(
        cls, kind: str, *, checkpoint: str | None = None, config: str | None = None
    ) -> TrackerSpec:
        """`--tracker classical|sam2` with `--sam2-checkpoint` / `--sam2-config` (the CLI's and the
        UI's flags): SAM2 from a local checkpoint when one is given, else from the hub."""
        if kind == "classical":
            return cls("classical")
        if kind != "sam2":
            raise InputError(f"unknown tracker {kind!r}: use classical or sam2")
        if checkpoint:
            from revseg_agent.tools.sam2_tracker import DEFAULT_SAM2_CONFIG

            return cls("sam2", checkpoint=checkpoint, config=config or DEFAULT_SAM2_CONFIG)
        return cls("sam2-hub")

    @staticmethod
    def name_of(text: str) -> str:
        """What a trace records for a tracker spec: its family, as the loaded tracker's `name`
        (`classical`, `sam2`); an unparseable spec as written (its run failed on it)."""
        try:
            kind = TrackerSpec.parse(text).kind
        except InputError:
            return text
        return "sam2" if kind in {"sam2", "sam2-hub"} else kind

    @property
    def text(self) -> str:
        """The spec as text (`parse(spec.text) == spec`)."""
        if self.kind == "sam2":
            return f"sam2:{self.checkpoint}" + (f":{self.config}" if self.config else "")
        if self.kind == "sam2-hub":
            return f"sam2-hub:{self.hub_id or ''}"
        return "classical"

    def local_paths(self) -> list[str]:
        """The files on this machine loading it would read: a SAM2 checkpoint file."""
        return [self.checkpoint] if self.kind == "sam2" and self.checkpoint else []
