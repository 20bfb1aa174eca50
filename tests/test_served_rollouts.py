"""GRPO with rollouts sampled by a server and replayed locally (`recipe.rollout_server`).

The server is `tests/vllm_standin.py`, a separate process speaking vLLM 0.32's chat and
runtime-LoRA protocol in front of transformers (vLLM itself does not run on this CPU; that
module's doc says what is real and what differs)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml

from revseg_agent.app.cli import main
from revseg_agent.errors import InputError
from revseg_agent.graphs.chats import KEYFRAME_REF, round2_messages
from revseg_agent.graphs.names import SPATIAL_GROUNDING
from revseg_agent.graphs.traces import StepRecord, Trace
from revseg_agent.policies.base import ImageFrame, SamplingParams
from revseg_agent.policies.served import ServedPolicy, ServedPolicyError
from revseg_agent.synth.scenes import render_scene
from revseg_agent.training import served_rollouts
from revseg_agent.training.data import load_samples
from revseg_agent.training.recipe import LoraConfig, Recipe, RolloutServer
from revseg_agent.training.trainer import GRPOTrainer

from .conftest import low_token_share, tiny_grpo_recipe
from .vllm_standin import running

pytestmark = [pytest.mark.slow, pytest.mark.cross_process]

ADAPTERS = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def server(tiny_policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(tiny_policy_dir, tmp_path_factory.mktemp("standin") / "server.log") as url:
        yield url


def _recipe(policy: Path, out: Path, url: str, **kw: object) -> Recipe:
    fields: dict[str, object] = {"max_steps": 4, "save_every": 2, "lora": ADAPTERS, "rollout_server": url}
    return tiny_grpo_recipe(policy, out, **{**fields, **kw})


def _models(url: str) -> list[str]:
    return [m["id"] for m in httpx.get(f"{url}/models").json()["data"]]


def _metrics(out: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader((out / "metrics.csv").open())]


def test_grpo_samples_on_the_server_with_each_steps_adapters_and_replays_locally(
    server: str, tiny_policy_dir: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    out = tmp_path / "run"
    recipe = _recipe(tiny_policy_dir, out, server)
    trainer = GRPOTrainer(recipe, load_samples(recipe.data, tmp_path), extra_rewards={"low": low_token_share})
    before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters() if "lora_B" in k}
    trainer.train()
    assert any(
        not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters() if k in before
    )

    # Each step sampled with its own adapters; the server keeps only the latest, and so does disk.
    records = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert [r["policy"] for r in records] == [f"revseg-step-{r['step']} @ {server}" for r in records]
    assert sorted({r["step"] for r in records}) == [0, 1, 2, 3]
    assert [m for m in _models(server) if m.startswith("revseg-step-")] == ["revseg-step-3"]
    assert [p.name for p in (out / "adapters").iterdir()] == ["step-3"]
    # Round 2 went to the server as text (it re-tokenises round 1's answer) and is recorded so.
    round2 = [
        s
        for r in records
        for s in r["trace"]["steps"]
        if s["node"] == SPATIAL_GROUNDING and s["completion_ids"]
    ]
    assert round2
    for step in round2:
        assistant = [m for m in step["messages"] if m["role"] == "assistant"]
        assert assistant and all(m.get("token_ids") is None for m in assistant)
        assert len(step["logprobs"]) == len(step["completion_ids"])

    # The server's sampling-time log-probs are the local replay's at every step (to float noise:
    # the frames travel losslessly): it sampled with the weights being trained, not stale ones.
    metrics = _metrics(out)
    assert len(metrics) == 4
    assert max(m["logprob_gap_max"] for m in metrics) < 1e-4

    # After publishing the trained adapters, greedy answers on a lossless image equal the local
    # policy's: same tokens, same log-probs.
    trainer.sync_rollout_server()
    served = trainer.rollout_policy()
    assert isinstance(served, ServedPolicy) and served.model == "revseg-step-4"
    messages = round2_messages("the red square")
    visuals = {KEYFRAME_REF: ImageFrame(np.asarray(render_scene(3, num_frames=2).frames[0]))}
    sampling = SamplingParams(max_new_tokens=12)
    (want,) = trainer.policy.generate(messages, visuals, sampling=sampling)
    (got,) = served.generate(messages, visuals, sampling=sampling)
    assert (got.text, got.prompt_ids, got.completion_ids) == (want.text, want.prompt_ids, want.completion_ids)
    assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_a_server_left_on_old_adapters_shows_as_a_log_prob_gap(
    server: str,
    tiny_policy_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_torch_thread: None,
) -> None:
    """Why adapters are published every step: without it the same run samples from step 0's
    weights and the recorded log-probs drift away from the replay."""
    publish, policy = served_rollouts.AdapterPublisher.publish, served_rollouts.AdapterPublisher.policy

    def publish_once(self: served_rollouts.AdapterPublisher, model: object, step: int) -> None:
        if step == 0:
            publish(self, model, step)

    monkeypatch.setattr(served_rollouts.AdapterPublisher, "publish", publish_once)
    monkeypatch.setattr(served_rollouts.AdapterPublisher, "policy", lambda self, step: policy(self, 0))
    out = tmp_path / "stale"
    recipe = _recipe(
        tiny_policy_dir, out, server, rollout_server={"url": server, "adapter_prefix": "stale"}, save_every=10
    )
    trainer = GRPOTrainer(recipe, load_samples(recipe.data, tmp_path), extra_rewards={"low": low_token_share})
    trainer.train()
    assert max(m["logprob_gap_mean"] for m in _metrics(out)[1:]) > 0.05


def test_a_resumed_run_serves_its_own_step_and_drops_what_the_last_run_left(
    server: str, tiny_policy_dir: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    out = tmp_path / "run"
    recipe = _recipe(tiny_policy_dir, out, server, rollout_server={"url": server, "adapter_prefix": "resume"})
    samples = load_samples(recipe.data, tmp_path)
    GRPOTrainer(recipe, samples).train(max_steps=3)  # stops with resume-2 loaded and on disk
    assert [m for m in _models(server) if m.startswith("resume-")] == ["resume-2"]
    GRPOTrainer(recipe, samples, resume=True).train(max_steps=4)
    assert [m for m in _models(server) if m.startswith("resume-")] == ["resume-3"]
    assert [p.name for p in (out / "adapters").iterdir()] == ["step-3"]
    records = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert {r["step"]: r["policy"] for r in records}[3] == f"resume-3 @ {server}"


def test_cli_trains_through_the_server_from_a_yaml_recipe(
    server: str, tiny_policy_dir: Path, tmp_path: Path
) -> None:
    recipe = {
        "policy": str(tiny_policy_dir),
        "data": {"kind": "generated", "num_samples": 2, "num_frames": 6},
        "group_size": 2,
        "max_new_tokens": 8,
        "num_frames": 4,
        "max_steps": 2,
        "save_every": 2,
        "device": "cpu",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "rollout_server": {"url": server, "adapter_prefix": "cli"},
    }
    config = tmp_path / "served.yaml"
    config.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["train", "grpo", "--config", str(config), "--output-dir", str(out)]) == 0
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()
    policies = {json.loads(line)["policy"] for line in (out / "traces.jsonl").read_text().splitlines()}
    assert policies == {f"cli-0 @ {server}", f"cli-1 @ {server}"}


def test_a_server_without_runtime_lora_loading_is_named_as_the_problem(
    tiny_policy_dir: Path, tmp_path: Path
) -> None:
    with running(tiny_policy_dir, tmp_path / "server.log", runtime_lora=False) as url:
        recipe = _recipe(tiny_policy_dir, tmp_path / "run", url, max_steps=1)
        trainer = GRPOTrainer(recipe, load_samples(recipe.data, tmp_path))
        with pytest.raises(ServedPolicyError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
            trainer.train()
        assert (
            not (tmp_path / "run" / "traces.jsonl").is_file()
            or not (tmp_path / "run" / "traces.jsonl").read_text()
        )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:8000/v1", RolloutServer(url="http://127.0.0.1:8000/v1")),
        (
            {"url": "http://h:1/v1", "adapter_prefix": "p"},
            RolloutServer(url="http://h:1/v1", adapter_prefix="p"),
        ),
    ],
)
def test_recipe_rollout_server_forms(value: object, expected: RolloutServer) -> None:
    recipe = Recipe.model_validate({"policy": "tiny-random", "lora": {}, "rollout_server": value})
    assert recipe.rollout_server == expected


def test_served_rollouts_without_lora_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="rollout_server needs `lora:`"):
        Recipe.model_validate({"policy": "tiny-random", "rollout_server": "http://127.0.0.1:8000/v1"})


def test_a_server_that_returns_no_token_ids_is_named() -> None:
    step = StepRecord(
        node="semantic_interpretation", started_at=0.0, duration_s=0.0, completion="frame id: 1"
    )
    with pytest.raises(InputError, match="return_token_ids"):
        trace = Trace(video_path="v.mp4", query="q", policy="p", tracker="t", steps=[step])
        served_rollouts.require_token_ids([trace], "http://x/v1")
