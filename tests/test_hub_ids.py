"""Hub ids that are neither cached nor reachable fail at once with a clear error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from revseg_agent.errors import CheckpointError
from revseg_agent.hub import hub_unreachable_reason, is_cached, require_hub_or_cache

REPO = "someone/some-model"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty local cache and a hub endpoint that cannot resolve, no proxy."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _cache(root: Path, repo: str, filename: str) -> None:
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / filename).write_text("{}")


def test_not_cached_and_unreachable_is_a_clear_error(hub: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"not in the local Hugging Face cache.*cannot resolve hub.invalid"
    ):
        require_hub_or_cache(REPO, "config.json", what="policy")


def test_offline_mode_is_named(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE"):
        require_hub_or_cache(REPO, "config.json", what="policy")


def _no_lookup(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record DNS lookups instead of making them; every name fails to resolve."""
    lookups: list[str] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> list[object]:
        lookups.append(host)
        raise OSError("no network")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_a_cached_model_loads_without_the_hub(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _no_lookup(monkeypatch)
    _cache(hub, REPO, "config.json")
    assert is_cached(REPO, "config.json")
    require_hub_or_cache(REPO, "config.json", what="policy")  # no error...
    assert lookups == []  # ...and the hub is not even looked up
    with pytest.raises(CheckpointError):  # a file the cache lacks still needs the hub
        require_hub_or_cache(REPO, "model.safetensors", what="policy")
    assert lookups == ["hub.invalid"]


def test_behind_a_proxy_the_lookup_is_left_to_the_download(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _no_lookup(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert hub_unreachable_reason() is None
    require_hub_or_cache(REPO, "config.json", what="policy")  # no error: the download decides
    assert lookups == []


def test_the_policy_loader_fails_fast(hub: Path) -> None:
    from revseg_agent.policies.qwen import QwenVLPolicy

    with pytest.raises(CheckpointError, match="policy 'someone/some-model' is not in the local"):
        QwenVLPolicy.from_pretrained(REPO, device="cpu")
