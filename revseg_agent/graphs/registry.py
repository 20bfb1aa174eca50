"""Build policies and trackers from short text specs, for the CLI and for `langgraph dev`.

A `Context` normally holds live objects; a served graph receives JSON, so it may hold specs:
- policy: anything `from_pretrained` takes (hub id or local folder), or
  `served:<base url>[#<model>]` for a model behind an OpenAI-compatible server (vLLM, SGLang);
- tracker: `classical`, `sam2:<checkpoint path>[:<config name>]` or `sam2-hub:<hub id>`.
Loaded objects are cached per spec so a served graph loads each model once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from revseg_agent.errors import InputError
from revseg_agent.policies.base import Policy
from revseg_agent.tools.base import Tracker

logger = logging.getLogger(__name__)
T = TypeVar("T")
_loaded: dict[tuple[Any, ...], Any] = {}
_key_locks: dict[tuple[Any, ...], threading.Lock] = {}
_registry_lock = threading.Lock()


def _load_once(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """Load the object for `key` once, even when several threads ask for it at the same time
    (a served graph's concurrent cold runs): the first caller loads, the others wait for it."""
    with _registry_lock:
        if key in _loaded:
            return _loaded[key]
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _loaded:
            kind, spec, device = key[:3]
            logger.info("loading %s %s on %s", kind, spec, device or "the default device")
            _loaded[key] = load()
        return _loaded[key]


def check_device(device: str | None, *, option: str = "--device") -> None:
    """A device torch can use here (`InputError` naming it otherwise), checked before any load:
    `cuda` on a machine without a GPU is bad input, not a driver traceback."""
    if device is None or device == "cpu":
        return
    import torch

    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise InputError(f"{option} {device!r}: use cpu, cuda or cuda:<index>")
    if not torch.cuda.is_available():
        raise InputError(
            f"{option} {device}: torch sees no CUDA GPU on this machine (torch.cuda.is_available() "
            "is False): use cpu, or install a CUDA build of torch on a machine with a GPU"
        )
    if index and int(index) >= torch.cuda.device_count():
        raise InputError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def load_policy(spec: str, device: str | None = None) -> Policy:
    """The policy a spec names, loaded once per (spec, device)."""
    check_device(device)
    return _load_once(("policy", spec, device), lambda: _build_policy(spec, device))


#: The tiny policy trained on the synthetic world, shipped inside the package (Hugging Face layout).
REVSEG_TINY = "revseg-tiny"
#: The supervised warm start of the current world's recipe (`recipes/revseg-tiny-sft.yaml`, its
#: step-3250 save): where `recipes/revseg-tiny-grpo.yaml` starts, shipped so GRPO runs from a clone.
REVSEG_TINY_SFT = "revseg-tiny-sft"
PACKAGED_POLICIES = (REVSEG_TINY, REVSEG_TINY_SFT)


def policy_source(spec: str) -> str:
    """The folder or hub id a local policy spec loads from: `revseg-tiny` and `revseg-tiny-sft`
    are packaged checkpoints, anything else is passed to `from_pretrained` as given."""
    if spec not in PACKAGED_POLICIES:
        return spec
    from importlib import resources

    from revseg_agent.errors import CheckpointError

    folder = Path(str(resources.files("revseg_agent"))) / "assets" / spec
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"the {spec} checkpoint is not part of this installation ({folder})")
    return str(folder)


def _build_policy(spec: str, device: str | None) -> Policy:
    if spec.startswith("served:"):
        from revseg_agent.policies.served import ServedPolicy

        return ServedPolicy.from_spec(spec)
    from revseg_agent.policies.qwen import QwenVLPolicy

    return QwenVLPolicy.from_pretrained(policy_source(spec), device=device)


def spec_paths(spec: str, kind: str) -> list[str]:
    """The files on this machine a policy or tracker spec would read (for `Context.allowed_dirs`):
    a local checkpoint folder or SAM2 checkpoint; none for hub ids, packaged names or servers."""
    if kind == "tracker":
        name, _, rest = spec.partition(":")
        return [rest.partition(":")[0]] if name == "sam2" and rest else []
    if spec.startswith("served:") or spec in PACKAGED_POLICIES:
        return []
    from revseg_agent.policies.qwen import looks_local

    return [spec] if looks_local(spec) else []


def check_policy_spec(spec: str) -> None:
    """Cheap checks of a policy spec (a local folder that exists, a hub id that is cached or
    reachable), to run before anything is loaded. Served specs are checked when first called."""
    if spec.startswith("served:"):
        return
    from revseg_agent.policies.qwen import check_policy_source

    check_policy_source(policy_source(spec))


def check_tracker_spec(spec: str) -> None:
    """Cheap checks of a tracker spec (known kind, a SAM2 checkpoint file that torch can read),
    to run before anything expensive (the policy) is loaded."""
    kind, _, rest = spec.partition(":")
    if kind in {"classical", "sam2-hub"}:
        return
    if kind == "sam2":
        checkpoint = rest.partition(":")[0]
        if not checkpoint:
            raise InputError("a sam2 tracker spec needs a checkpoint: sam2:<path>[:<config>]")
        from revseg_agent.tools.sam2_tracker import check_checkpoint_file

        check_checkpoint_file(checkpoint)
        return
    raise InputError(f"unknown tracker spec {spec!r}: use classical, sam2:<checkpoint> or sam2-hub:<id>")


def load_tracker(spec: str, device: str | None = None, image_size: int | None = None) -> Tracker:
    """The tracker a spec names, loaded once per (spec, device, image size). `image_size` lowers
    SAM2's input resolution (memory); ignored by the classical tracker."""
    check_tracker_spec(spec)
    check_device(device)
    return _load_once(("tracker", spec, device, image_size), lambda: _build_tracker(spec, device, image_size))


def _build_tracker(spec: str, device: str | None, image_size: int | None) -> Tracker:
    kind, _, rest = spec.partition(":")
    if kind == "classical":
        from revseg_agent.tools.classical import ClassicalTracker

        return ClassicalTracker()
    if kind == "sam2":
        from revseg_agent.tools.sam2_tracker import DEFAULT_SAM2_CONFIG, SAM2Tracker

        checkpoint, _, config = rest.partition(":")
        return SAM2Tracker.from_checkpoint(
            checkpoint, config or DEFAULT_SAM2_CONFIG, device=device, image_size=image_size
        )
    if kind == "sam2-hub":
        from revseg_agent.tools.sam2_tracker import DEFAULT_SAM2_HUB_ID, SAM2Tracker

        return SAM2Tracker.from_pretrained(rest or DEFAULT_SAM2_HUB_ID, device=device, image_size=image_size)
    raise AssertionError(f"unreachable: {kind}")  # check_tracker_spec refused it


def resolve_policy(policy: Policy | str) -> Policy:
    return load_policy(policy) if isinstance(policy, str) else policy


def resolve_tracker(tracker: Tracker | str) -> Tracker:
    return load_tracker(tracker) if isinstance(tracker, str) else tracker
