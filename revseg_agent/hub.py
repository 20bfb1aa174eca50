"""Fail fast when a hub id can neither be found in the local cache nor fetched.

Why: offline, `from_pretrained` on a hub id spends about 50 s in HTTP retries (measured) before
it says the hub cannot be reached. One DNS lookup tells the same in milliseconds, so the CLI can
name the problem at once. Behind a proxy the lookup proves nothing and is skipped.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from revseg_agent.errors import CheckpointError

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def is_cached(repo_id: str, filename: str, revision: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached (None when it may be: reachable, or behind a proxy)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return None
    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    return None


def require_hub_or_cache(repo_id: str, filename: str, *, what: str, revision: str | None = None) -> None:
    """Raise `CheckpointError` at once when `repo_id` is not cached and the hub is unreachable."""
    if is_cached(repo_id, filename, revision):
        return
    reason = hub_unreachable_reason()
    if reason is not None:
        raise CheckpointError(
            f"{what} {repo_id!r} is not in the local Hugging Face cache and the hub cannot be "
            f"reached ({reason}); pass a local folder, or download it where the hub is reachable"
        )
