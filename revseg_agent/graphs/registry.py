"""Policies and trackers from their specs (`specs`), for the CLI, evaluation, the UI and
`langgraph dev`. Loaded objects are cached per spec so a served graph loads each model once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from revseg_agent.errors import InputError
from revseg_agent.policies.base import Policy
from revseg_agent.specs import PolicySpec, TrackerSpec
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


def policy_source(spec: str) -> str:
    """The folder or hub id a local policy spec loads from (`PolicySpec.source`)."""
    return PolicySpec.parse(spec).source()


def _build_policy(spec: str, device: str | None) -> Policy:
    parsed = PolicySpec.parse(spec)
    if parsed.served:
        from revseg_agent.policies.served import ServedPolicy

        return ServedPolicy.from_spec(spec)
    from revseg_agent.policies.qwen import QwenVLPolicy

    return QwenVLPolicy.from_pretrained(parsed.source(), device=device, name=parsed.name)


def spec_paths(spec: str, kind: str) -> list[str]:
    """The files on this machine a policy or tracker spec would read (for `Context.allowed_dirs`)."""
    if kind == "tracker":
        return TrackerSpec.parse(spec).local_paths()
    return PolicySpec.parse(spec).local_paths()


def check_policy_spec(spec: str) -> None:
    """Cheap checks of a policy spec (a local folder that exists, a hub id that is cached or
    reachable), to run before anything is loaded. Served specs are checked when first called."""
    parsed = PolicySpec.parse(spec)
    if parsed.served:
        return
    from revseg_agent.policies.qwen import check_policy_source

    check_policy_source(parsed.source())


def check_tracker_spec(spec: str) -> None:
    """Cheap checks of a tracker spec (known kind, a SAM2 checkpoint file that torch can read),
    to run before anything expensive (the policy) is loaded."""
    parsed = TrackerSpec.parse(spec)
    if parsed.checkpoint is not None:
        from revseg_agent.tools.sam2_tracker import check_checkpoint_file

        check_checkpoint_file(parsed.checkpoint)


def load_tracker(spec: str, device: str | None = None, image_size: int | None = None) -> Tracker:
    """The tracker a spec names, loaded once per (spec, device, image size). `image_size` lowers
    SAM2's input resolution (memory); ignored by the classical tracker."""
    check_tracker_spec(spec)
    check_device(device)
    return _load_once(("tracker", spec, device, image_size), lambda: _build_tracker(spec, device, image_size))


def _build_tracker(spec: str, device: str | None, image_size: int | None) -> Tracker:
    parsed = TrackerSpec.parse(spec)
    if parsed.kind == "classical":
        from revseg_agent.tools.classical import ClassicalTracker

        return ClassicalTracker()
    from revseg_agent.tools.sam2_tracker import DEFAULT_SAM2_CONFIG, DEFAULT_SAM2_HUB_ID, SAM2Tracker

    if parsed.kind == "sam2":
        assert parsed.checkpoint is not None
        return SAM2Tracker.from_checkpoint(
            parsed.checkpoint, parsed.config or DEFAULT_SAM2_CONFIG, device=device, image_size=image_size
        )
    return SAM2Tracker.from_pretrained(
        parsed.hub_id or DEFAULT_SAM2_HUB_ID, device=device, image_size=image_size
    )


def resolve_policy(policy: Policy | str) -> Policy:
    return load_policy(policy) if isinstance(policy, str) else policy


def resolve_tracker(tracker: Tracker | str) -> Tracker:
    return load_tracker(tracker) if isinstance(tracker, str) else tracker


def run_names(policy: Policy | str, tracker: Tracker | str) -> tuple[str, str]:
    """What a trace records as its policy and tracker, without loading anything (a failed run
    may name a spec that cannot load): an object's `name`, a spec's `name`. A policy loaded
    from a spec is named by it, so the CLI (objects) and a served graph (specs) record the same
    `revseg-tiny`; a tracker by its family (`classical`, `sam2`)."""
    return (
        PolicySpec.name_of(policy) if isinstance(policy, str) else policy.name,
        TrackerSpec.name_of(tracker) if isinstance(tracker, str) else tracker.name,
    )
