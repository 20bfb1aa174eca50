"""Shared fixtures: generated clips, tiny real models saved to disk, and the shared DAVIS data."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import torch

from revseg_agent.graphs.traces import Trace
from revseg_agent.synth.square_clip import demo_frames, make_demo_clip
from revseg_agent.training.recipe import GeneratedData, Recipe
from revseg_agent.training.rewards import RewardConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DAVIS = SHARED_DATA / "davis2016-subset"
DAVIS_SEQUENCES = ("blackswan", "car-shadow", "dog")


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-frame 320x240 mp4: a red square moving right, a blue circle moving down."""
    return make_demo_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same clip as a folder of PNG frames (lossless)."""
    folder = tmp_path_factory.mktemp("frames")
    for i, f in enumerate(demo_frames()):
        cv2.imwrite(str(folder / f"frame_{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Qwen2.5-VL saved with save_pretrained (safetensors + processor)."""
    from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen"), seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init Qwen3-VL shrunk from the released Qwen3-VL-2B-Instruct configuration."""
    from revseg_agent.policies.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3"), released="2B", seed=0)


SAM2_TEST_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM2_TEST_IMAGE_SIZE = 128


@pytest.fixture(scope="session")
def tiny_sam2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init SAM2.1 Hiera-T (the real config) saved as `{"model": state_dict}`."""
    pytest.importorskip("sam2")
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    model = build_sam2_video_predictor(
        SAM2_TEST_CONFIG,
        None,
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SAM2_TEST_IMAGE_SIZE}"],
    )
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def davis() -> Path:
    if not DAVIS.is_dir():
        pytest.skip(f"shared DAVIS data not found at {DAVIS}")
    return DAVIS


def davis_masks(root: Path, sequence: str) -> np.ndarray:
    files = sorted((root / "Annotations" / sequence).glob("*.png"))
    return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in files])


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int | None]]:
    """Every tqdm progress bar the code under test closes, as (description, count, total)."""
    import tqdm

    closed: list[tuple[str, int, int | None]] = []

    class RecordingBar(tqdm.tqdm):  # type: ignore[type-arg]
        def close(self) -> None:
            if not getattr(self, "_recorded", False):
                self._recorded = True
                closed.append((str(self.desc), int(self.n), self.total))
            super().close()

    monkeypatch.setattr(tqdm, "tqdm", RecordingBar)
    return closed


def load_benchmark(name: str) -> Any:
    """A script of `benchmarks/` (not a package) imported as a module, for tests of its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses resolve string annotations through it
    spec.loader.exec_module(module)
    return module


def render_in_chromium(page: Path | str, shot: Path, *, size: str = "1280,1600") -> Path:
    """A headless-Chromium screenshot of `page`, a file or a URL (the test skips where Debian's
    chromium is absent). Virtual time runs 15 s ahead so a served page's scripts finish."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={shot.parent / 'chromium-profile'}",
            f"--screenshot={shot}",
            f"--window-size={size}",
            "--virtual-time-budget=15000",
            page.as_uri() if isinstance(page, Path) else page,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return shot


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server_process(
    args: list[str], ready_url: str, log: Path, *, timeout_s: float = 120, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process (output to `log`), wait until `ready_url` answers 200, and stop
    it afterwards; a server that exits or never answers fails with the end of its log."""
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def rss_mb(pid: int | str = "self", *, children: bool = False) -> float:
    """Resident memory of a process (and, with `children`, its direct children) in MB, from /proc."""
    pids = [str(pid)]
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    if children and listing.exists():
        pids += listing.read_text().split()
    total = 0.0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test: a ~1M-parameter model runs faster so (measured: 48 GRPO
    rollouts of revseg-tiny 5 s on one thread vs 96 s on two beside another busy process)."""
    with torch_threads(1):
        yield


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    """Torch on two threads in this process, whatever the machine's default: for tests that compare
    against workers on one thread, so a difference in reduction order shows on every machine."""
    with torch_threads(2):
        yield


def low_token_share(completions: Sequence[Trace], **_: object) -> list[float | None]:
    """A small learnable task: the share of written tokens from the lower half of the vocabulary."""
    return [float(np.mean([i < 256 for s in t.steps for i in s.completion_ids])) for t in completions]


def tiny_grpo_recipe(policy_dir: Path, out: Path, **kw: object) -> Recipe:
    """A GRPO recipe that takes a few seconds a step with the tiny random policy; `kw` overrides."""
    base: dict[str, object] = {
        "policy": str(policy_dir),
        "output_dir": str(out),
        "data": GeneratedData(num_samples=2, num_frames=6),
        "group_size": 4,
        "prompts_per_step": 1,
        "learning_rate": 5e-2,
        "beta": 0.0,
        "max_new_tokens": 8,
        "num_frames": 4,
        "max_steps": 2,
        "save_every": 1,
        "device": "cpu",
        # a random policy's rounds mostly fall back: the token-share reward counts them anyway
        "rewards": RewardConfig(weights={"format": 1.0}, reward_fallbacks=True),
    }
    base.update(kw)
    return Recipe.model_validate(base)


def torchrun_workers(worker: str, policy_dir: Path, out: Path, *args: str) -> list[dict[str, Any]]:
    """Run `tests/<worker>` on 2 CPU processes (`torchrun --nproc_per_node 2`, gloo); each rank's
    `rank<r>.json` from `out`, after checking every rank closed its trainer's process group."""
    import json
    import subprocess
    import sys

    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*launch, str(Path(__file__).with_name(worker)), str(policy_dir), str(out), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # which ranks got as far as writing their results tells a crash at exit from one mid-run
    written = sorted(p.name for p in out.glob("rank*.json")) if out.is_dir() else []
    assert proc.returncode == 0, f"ranks that wrote results: {written}\n{proc.stderr[-3000:]}"
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    # a rank that exits with its gloo group alive can abort at interpreter shutdown (SIGABRT,
    # "terminate called without an active exception"): `close` must have destroyed it
    assert all(r["group_destroyed"] for r in ranks), ranks
    return ranks


def processor_reference_batch(policy: Any, requests: list) -> dict:  # type: ignore[type-arg]
    """The processor's own left-padded batch of whole chats, prepared as Qwen's README prepares
    them for the policy's family (qwen-vl-utils on its patch grid, the clips' real metadata;
    Qwen3-VL: `do_resize=False`): what `prepare_batch` must equal when no assistant turn
    carries token ids."""
    from qwen_vl_utils import process_vision_info

    builder = policy.inputs
    conversations, clips = [], []
    for messages, visuals in requests:
        elements, by_kind = builder.visual_elements(messages, visuals)
        conversations.append(builder.processor_conversation(messages, elements))
        clips += by_kind["video"]
    images, videos, _ = process_vision_info(
        conversations,
        return_video_kwargs=True,
        return_video_metadata=True,
        image_patch_size=policy.family.patch_size,
    )
    metadata = [
        {
            "fps": c.fps,
            "total_num_frames": c.total_num_frames,
            "frames_indices": list(c.frame_indices)
            + [c.frame_indices[-1]] * (int(v.shape[0]) - len(c.frame_indices)),
        }
        for (v, _), c in zip(videos or [], clips, strict=True)
    ]
    texts = [
        policy.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
        for c in conversations
    ]
    kwargs: dict[str, Any] = {"videos": [v for v, _ in videos], "video_metadata": metadata} if videos else {}
    if not policy.family.processor_resizes:
        kwargs["do_resize"] = False
    return dict(
        policy.processor(
            text=texts,
            images=images,
            do_sample_frames=False,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            **kwargs,
        )
    )
