"""Which paths on this machine a remote caller may make revseg read or write.

The browser page (`revseg ui`) and the served graph (`langgraph dev`) take file paths from
whoever reaches them. On loopback that is the machine's own user; beyond it, anyone on the
network, who must not open `/home/...` or `/etc/...` through a "video path" or make the server
write masks anywhere. Roots are resolved with symlinks at the moment of the check, so a link
inside a root that points outside it is refused too.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from revseg_agent.errors import InputError

#: The served graph's roots, set where the server runs (`os.pathsep`-separated folders): a
#: context field would be chosen by the client, which is who the roots keep in bounds.
ALLOWED_DIRS_ENV = "REVSEG_ALLOWED_DIRS"


def allowed_dirs_from_env() -> tuple[str, ...] | None:
    """The roots `REVSEG_ALLOWED_DIRS` names; None (any path) when it is unset or empty."""
    raw = os.environ.get(ALLOWED_DIRS_ENV, "")
    roots = tuple(part for part in raw.split(os.pathsep) if part.strip())
    return roots or None


def is_within(path: str | Path, roots: Sequence[str | Path]) -> bool:
    real = os.path.realpath(Path(path).expanduser())
    for root in roots:
        base = os.path.realpath(Path(root).expanduser())
        if real == base or real.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def require_within(path: str | Path, roots: Sequence[str | Path] | None, what: str) -> None:
    """`InputError` when `roots` are set and `path` (resolved) lies under none of them."""
    if roots is None or is_within(path, roots):
        return
    listed = ", ".join(map(str, roots))
    raise InputError(f"{what} {path} is outside the folders this server may read ({listed})")


def is_loopback(host: str) -> bool:
    """Whether a listen address reaches only this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
