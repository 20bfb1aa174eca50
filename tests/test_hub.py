"""Hub ids that are neither cached nor reachable fail at once with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

from revseg_agent.errors import CheckpointError
from revseg_agent.hub import require_hub_or_cache

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


def test_a_cached_model_loads_without_the_hub(hub: Path) -> None:
    _cache(hub, REPO, "config.json")
    require_hub_or_cache(REPO, "config.json", what="policy")  # no error


def test_behind_a_proxy_the_lookup_is_left_to_the_download(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    require_hub_or_cache(REPO, "config.json", what="policy")  # no error


def test_the_policy_loader_fails_fast(hub: Path) -> None:
    from revseg_agent.policies.qwen import QwenVLPolicy

    with pytest.raises(CheckpointError, match="policy 'someone/some-model' is not in the local"):
        QwenVLPolicy.from_pretrained(REPO, device="cpu")
