"""GRPO on replayed traces: the objective, learning on a tiny model, resume, rescoring, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from revseg_agent.app.cli import main
from revseg_agent.errors import InputError
from revseg_agent.training.data import load_samples
from revseg_agent.training.loss import group_advantages, grpo_token_terms
from revseg_agent.training.recipe import GeneratedData, Recipe
from revseg_agent.training.rewards import RewardConfig
from revseg_agent.training.store import TraceStore, rescore
from revseg_agent.training.trainer import GRPOTrainer

from .conftest import low_token_share, tiny_grpo_recipe, torchrun_workers

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_group_advantages() -> None:
    assert group_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]  # no signal, no update
    adv = group_advantages([0.0, 1.0])
    assert adv == pytest.approx([-0.5 / 0.7072, 0.5 / 0.7072], abs=1e-3)  # TRL: the sample std
    assert sum(group_advantages([0.2, 0.5, 0.9, 0.1])) == pytest.approx(0.0, abs=1e-9)


def test_grpo_token_terms_by_hand() -> None:
    new = torch.log(torch.tensor([0.5, 0.5]))
    old = torch.log(torch.tensor([0.25, 0.5]))  # ratios 2 and 1
    terms = grpo_token_terms(new, old, 1.0, clip_epsilon=0.2)
    assert terms.loss.tolist() == pytest.approx([-1.2, -1.0])  # the ratio 2 is clipped to 1.2
    assert terms.clipped.tolist() == [True, False]
    terms = grpo_token_terms(new, old, -1.0, clip_epsilon=0.2)
    assert terms.loss.tolist() == pytest.approx([2.0, 1.0])  # pessimistic side for negative advantages
    assert terms.clipped.tolist() == [False, False]  # a high ratio with A < 0 is not held by the clip
    ref = torch.log(torch.tensor([0.25, 0.5]))
    terms = grpo_token_terms(new, old, 1.0, clip_epsilon=0.2, ref=ref, beta=0.1)
    delta = float(np.log(0.5))
    assert terms.kl.tolist() == pytest.approx([np.exp(delta) - delta - 1, 0.0])


@pytest.mark.slow
def test_steps_change_parameters_and_mean_reward_rises(tiny_policy_dir: Path, tmp_path: Path) -> None:
    recipe = tiny_grpo_recipe(tiny_policy_dir, tmp_path, max_steps=12, save_every=100)
    trainer = GRPOTrainer(recipe, load_samples(recipe.data, tmp_path), extra_rewards={"low": low_token_share})
    assert trainer.policy is not None
    before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
    history = trainer.train()
    changed = sum(not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters())
    assert changed > 0
    rewards = [m["reward_low"] for m in history]
    print("mean reward per step:", [round(r, 2) for r in rewards])
    assert np.mean(rewards[-3:]) > np.mean(rewards[:2]) + 0.2
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 12 and {"reward_low", "reward_format", "loss", "kl", "turns"} <= rows[0].keys()
    assert (tmp_path / "metrics.png").stat().st_size > 10_000


@pytest.mark.slow
def test_kill_and_resume_continues_with_the_same_optimizer_state(
    tiny_policy_dir: Path, tmp_path: Path
) -> None:
    straight = GRPOTrainer(
        tiny_grpo_recipe(tiny_policy_dir, tmp_path / "a", max_steps=3, beta=0.01),
        load_samples(GeneratedData(num_samples=2, num_frames=6), tmp_path / "a"),
        extra_rewards={"low": low_token_share},
    )
    straight.train()

    samples = load_samples(GeneratedData(num_samples=2, num_frames=6), tmp_path / "b")
    first = GRPOTrainer(
        tiny_grpo_recipe(tiny_policy_dir, tmp_path / "b", max_steps=3, beta=0.01),
        samples,
        extra_rewards={"low": low_token_share},
    )
    first.train(max_steps=2)  # ... and the process dies here
    assert first.optimizer is not None
    saved = {k: v.clone() for k, v in first.optimizer.state_dict()["state"][0].items()}

    resumed = GRPOTrainer(
        tiny_grpo_recipe(tiny_policy_dir, tmp_path / "b", max_steps=3, beta=0.01),
        samples,
        extra_rewards={"low": low_token_share},
        resume=True,
    )
    assert resumed.step == 2 and resumed.optimizer is not None
    restored = resumed.optimizer.state_dict()["state"][0]
    for key, value in saved.items():
        assert torch.equal(restored[key], value), key
    resumed.train()
    assert resumed.step == 3
    assert straight.policy is not None and resumed.policy is not None
    for (name, a), (_, b) in zip(
        straight.policy.model.named_parameters(), resumed.policy.model.named_parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.slow
def test_a_resumed_run_records_each_step_once(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """Steps after the last checkpoint are run again on resume; their earlier rollouts and metric
    rows go, so the trace store and metrics.csv read as if the run had never stopped."""
    import shutil

    def run(out: Path, max_steps: int, resume: bool = False) -> None:
        recipe = tiny_grpo_recipe(tiny_policy_dir, out, max_steps=3, save_every=2)
        GRPOTrainer(
            recipe, load_samples(recipe.data, out), extra_rewards={"low": low_token_share}, resume=resume
        ).train(max_steps=max_steps)

    run(tmp_path / "straight", 3)
    run(tmp_path / "b", 3)
    shutil.rmtree(tmp_path / "b" / "checkpoint-3")  # step 3 ran, but its checkpoint was lost
    run(tmp_path / "b", 3, resume=True)

    def rollouts(out: Path) -> list[tuple[str, int, list[int]]]:
        records = TraceStore(out / "traces.jsonl")
        return [(r.group_id, r.index, r.trace.steps[1].completion_ids) for r in records]

    assert len(rollouts(tmp_path / "b")) == 3 * 4  # 3 steps of 4 rollouts, none twice
    assert rollouts(tmp_path / "b") == rollouts(tmp_path / "straight")
    steps = [row["step"] for row in csv.DictReader((tmp_path / "b" / "metrics.csv").open())]
    assert steps == ["1.0", "2.0", "3.0"]
    with pytest.raises(InputError, match="checkpoints of an earlier run"):
        run(tmp_path / "b", 3)  # a fresh start would mix two runs in one folder


@pytest.mark.slow
def test_rescore_recomputes_rewards_without_a_model(tiny_policy_dir: Path, tmp_path: Path) -> None:
    recipe = tiny_grpo_recipe(tiny_policy_dir, tmp_path, max_steps=1)
    GRPOTrainer(recipe, load_samples(recipe.data, tmp_path)).train()
    records = list(TraceStore(tmp_path / "traces.jsonl"))
    assert len(records) == 4 and all(r.ground_truth for r in records)
    again = rescore(records, RewardConfig(weights={"format": 2.0, "temporal": 1.0}))
    for old, new in zip(records, again, strict=True):
        assert set(new.rewards) == {"format", "temporal", "total"}
        assert new.rewards["total"] == pytest.approx(2 * new.rewards["format"] + new.rewards["temporal"])
        assert old.trace == new.trace


@pytest.mark.slow
def test_cli_tiny_recipe_then_rescore(tmp_path: Path, bars: list[tuple[str, int, int | None]]) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "grpo",
                "--config",
                str(RECIPES / "tiny-cpu.yaml"),
                "--output-dir",
                str(out),
                "--max-steps",
                "2",
            ]
        )
        == 0
    )
    assert (out / "checkpoint-2" / "model.safetensors").is_file()
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()
    generation = json.loads((out / "checkpoint-2" / "generation_config.json").read_text())
    assert generation["max_new_tokens"] == 16  # the recipe's budget: inference defaults to it
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 2
    assert list((out / "tensorboard").rglob("events.out.tfevents.*"))  # the recipe reports to TensorBoard
    assert ("grpo", 2, 2) in bars  # the progress bar reached the last step
    rescored = tmp_path / "rescored.jsonl"
    assert (
        main(
            [
                "train",
                "rescore",
                "--traces",
                str(out / "traces.jsonl"),
                "--config",
                str(RECIPES / "revseg-qwen2.5-vl-7b.yaml"),
                "--out",
                str(rescored),
            ]
        )
        == 0
    )
    lines = rescored.read_text().splitlines()
    assert len(lines) == 8 and "total" in json.loads(lines[0])["rewards"]


def test_shipped_recipes_load() -> None:
    from revseg_agent.training.recipe import SFTRecipe, load_recipe

    paths = sorted(RECIPES.glob("*.yaml"))
    recipes = {path.name: load_recipe(path) for path in paths}  # validates every field
    kinds = {name: type(recipe) for name, recipe in recipes.items()}
    assert (
        kinds["revseg-tiny-sft.yaml"] is SFTRecipe
        and kinds["revseg-qwen2.5-vl-7b-sft-lora.yaml"] is SFTRecipe
    )
    assert kinds["tiny-cpu.yaml"] is Recipe and kinds["revseg-qwen2.5-vl-7b.yaml"] is Recipe
    # a recipe that starts from a committed snapshot names one that is there (paths from the root)
    snapshots = {name: r.policy for name, r in recipes.items() if "snapshots/" in r.policy}
    assert "revseg-tiny-chain-20k-continue.yaml" in snapshots
    for name, policy in snapshots.items():
        assert (RECIPES.parent / policy / "model.safetensors").is_file(), name


@pytest.mark.parametrize(
    ("field", "value"),
    [("group_size", 1), ("learning_rate", 0.0), ("beta", -0.1), ("temperature", 0.0), ("max_steps", 0)],
)
def test_recipe_refuses_settings_that_cannot_train(tmp_path: Path, field: str, value: float) -> None:
    import yaml
    from pydantic import ValidationError

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"policy": "some/model", field: value}))
    with pytest.raises(ValidationError, match=field):
        Recipe.load(path)


@pytest.mark.slow
def test_lora_run_trains_adapters_only_and_resumes(tiny_policy_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from revseg_agent.training.recipe import LoraConfig

    def recipe(out: Path) -> Recipe:
        return tiny_grpo_recipe(
            tiny_policy_dir,
            out,
            max_steps=3,
            beta=0.01,
            lora=LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
        )

    data = GeneratedData(num_samples=2, num_frames=6)
    straight = GRPOTrainer(
        recipe(tmp_path / "a"), load_samples(data, tmp_path / "a"), extra_rewards={"low": low_token_share}
    )
    frozen = {k: v.detach().clone() for k, v in straight.policy.model.named_parameters() if "lora_" not in k}
    straight.train()
    for name, value in straight.policy.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(frozen[name], value), name
    assert (tmp_path / "a" / "checkpoint-3" / "adapter_model.safetensors").is_file()

    samples = load_samples(data, tmp_path / "b")
    GRPOTrainer(recipe(tmp_path / "b"), samples, extra_rewards={"low": low_token_share}).train(max_steps=2)
    resumed = GRPOTrainer(
        recipe(tmp_path / "b"), samples, extra_rewards={"low": low_token_share}, resume=True
    )
    resumed.train()
    assert resumed.step == 3 and resumed.policy is not None
    lora_a = dict(straight.policy.model.named_parameters())
    for name, value in resumed.policy.model.named_parameters():
        if "lora_" in name:
            assert torch.allclose(lora_a[name], value, atol=1e-6), name


@pytest.mark.slow
def test_off_policy_warm_start_from_stored_traces(tiny_policy_dir: Path, tmp_path: Path) -> None:
    from revseg_agent.training.recipe import WarmStart

    first = tiny_grpo_recipe(tiny_policy_dir, tmp_path / "a", max_steps=2)
    GRPOTrainer(
        first, load_samples(first.data, tmp_path / "a"), extra_rewards={"low": low_token_share}
    ).train()
    warm = tiny_grpo_recipe(
        tiny_policy_dir,
        tmp_path / "b",
        max_steps=2,
        warm_start=WarmStart(traces=str(tmp_path / "a" / "traces.jsonl"), steps=2, rescore=False),
    )
    trainer = GRPOTrainer(warm, load_samples(warm.data, tmp_path / "b"))
    before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
    history = trainer.train()
    assert [m.get("off_policy") for m in history] == [1.0, 1.0]
    assert "reward_low" in history[0]  # the stored rewards drove the update
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters())
    assert not (tmp_path / "b" / "traces.jsonl").exists()  # no rollouts were run
    own = warm.model_copy(
        update={
            "output_dir": str(tmp_path / "a"),
            "warm_start": WarmStart(traces=str(tmp_path / "a" / "traces.jsonl")),
        }
    )
    with pytest.raises(InputError, match="this run's own trace store"):
        GRPOTrainer(own, load_samples(own.data, tmp_path / "a"), resume=True).train()
    assert len(list(TraceStore(tmp_path / "a" / "traces.jsonl"))) == 2 * 4  # untouched


def _torchrun(policy_dir: Path, out: Path, *args: str) -> list[dict[str, float]]:
    """tests/ddp_worker.py on 2 CPU processes; each rank's parameter sum and step."""
    return torchrun_workers("ddp_worker.py", policy_dir, out, *args)


@pytest.mark.slow
def test_two_process_data_parallel_run_keeps_ranks_in_sync(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2` on the CPU (gloo): each rank rolls out its own samples, gradients
    are averaged, and both ranks end with the same weights."""
    from revseg_agent.policies.qwen import QwenVLPolicy

    ranks = _torchrun(tiny_policy_dir, tmp_path)
    assert ranks[0] == ranks[1] and ranks[0]["world"] == 2
    start = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    assert ranks[0]["param_sum"] != pytest.approx(
        float(sum(p.detach().double().sum() for p in start.model.parameters()))
    )
    seen = [
        {r.sample_id for r in TraceStore(tmp_path / name)} for name in ("traces.jsonl", "traces-rank1.jsonl")
    ]
    assert seen[0] and seen[1] and not seen[0] & seen[1]  # the ranks trained on different samples


@pytest.mark.slow
def test_deepspeed_zero2_trains_like_plain_data_parallel_and_resumes(
    tiny_policy_dir: Path, tmp_path: Path
) -> None:
    """The recipes' ZeRO-2 config (clipping off, to compare) on 2 CPU processes: both ranks end
    with the weights plain data parallel reaches, also when one rank has no signal to learn from
    (its backward passes are padded so the ranks' collectives match), checkpoints hold each
    rank's optimizer shard, and a run resumed from step 2 ends where an uninterrupted 3-step run
    ends."""
    pytest.importorskip("deepspeed")
    config = json.loads((RECIPES / "deepspeed" / "zero2.json").read_text())
    config["gradient_clipping"] = 0.0
    ds_config = tmp_path / "zero2.json"
    ds_config.write_text(json.dumps(config))
    plain = _torchrun(tiny_policy_dir, tmp_path / "plain")
    zero = _torchrun(tiny_policy_dir, tmp_path / "zero", "--deepspeed", str(ds_config))
    assert zero[0] == zero[1]
    assert zero[0]["engine_forwards"] > 0 and plain[0]["engine_forwards"] == 0  # forward via the engine
    assert zero[0]["param_sum"] == pytest.approx(
        plain[0]["param_sum"], rel=1e-6
    )  # fp32: ZeRO-2 buckets reduce in another order
    uneven = [
        _torchrun(tiny_policy_dir, tmp_path / name, "--uneven", *extra)
        for name, extra in (("plain-uneven", ()), ("zero-uneven", ("--deepspeed", str(ds_config))))
    ]
    assert uneven[1][0] == uneven[1][1]
    assert uneven[1][0]["param_sum"] == pytest.approx(uneven[0][0]["param_sum"], rel=1e-6)
    shards = sorted(p.name for p in (tmp_path / "zero" / "checkpoint-2" / "deepspeed").iterdir())
    assert [s for s in shards if "optim_states" in s] == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    resumed = _torchrun(
        tiny_policy_dir, tmp_path / "zero", "--deepspeed", str(ds_config), "--max-steps", "3", "--resume"
    )
    straight = _torchrun(
        tiny_policy_dir, tmp_path / "straight", "--deepspeed", str(ds_config), "--max-steps", "3"
    )
    assert resumed[0]["step"] == straight[0]["step"] == 3
    assert resumed[0]["param_sum"] == pytest.approx(straight[0]["param_sum"], rel=1e-9)


@pytest.mark.parametrize(
    "config, error",
    [
        ({"zero_optimization": {"stage": 3}}, "ZeRO stage 3 shards the weights"),
        (None, "DeepSpeed config not found"),
    ],
    ids=["zero-3", "missing"],
)
def test_a_recipe_with_an_unusable_deepspeed_config_is_refused_at_load(
    tmp_path: Path,
    config: dict | None,
    error: str,  # type: ignore[type-arg]
) -> None:
    if config is not None:
        (tmp_path / "ds.json").write_text(json.dumps(config))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("policy: tiny-random\ndeepspeed: ds.json\n")
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        Recipe.load(recipe)


def test_a_served_policy_cannot_be_trained() -> None:
    with pytest.raises(ValueError, match="needs the weights"):
        Recipe.model_validate({"policy": "served:http://127.0.0.1:8000/v1"})


def test_deepspeed_config_fills_autos_from_thetiny_grpo_recipe() -> None:
    from revseg_agent.training.recipe import Recipe, deepspeed_config

    recipe = Recipe.load(RECIPES / "revseg-qwen2.5-vl-7b.yaml")
    assert recipe.deepspeed == str(RECIPES / "deepspeed" / "zero2.json")
    config = deepspeed_config(recipe.deepspeed, 8, recipe.dtype)
    assert config["train_micro_batch_size_per_gpu"] == 1 and config["gradient_accumulation_steps"] == 1
    assert config["train_batch_size"] == 8 and config["bf16"]["enabled"] is True
    assert config["zero_optimization"]["stage"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_trains_to_the_same_weights(
    tiny_policy_dir: Path, tmp_path: Path, lora: bool
) -> None:
    """Recomputing activations in backward (the 7B recipe's memory setting) changes nothing."""
    from revseg_agent.training.recipe import LoraConfig

    adapters = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]) if lora else None
    weights = []
    for checkpointing in (False, True):
        out = tmp_path / str(checkpointing)
        recipe = tiny_grpo_recipe(
            tiny_policy_dir, out, max_steps=1, beta=0.01, lora=adapters, gradient_checkpointing=checkpointing
        )
        trainer = GRPOTrainer(recipe, load_samples(recipe.data, out), extra_rewards={"low": low_token_share})
        trainer.train()
        assert trainer.policy is not None
        modules = trainer.policy.model.modules()
        assert any(getattr(m, "gradient_checkpointing", False) for m in modules) == checkpointing
        weights.append(
            {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters() if v.requires_grad}
        )
    untrained = tiny_grpo_recipe(tiny_policy_dir, tmp_path / "start", lora=adapters)
    start = GRPOTrainer(untrained, load_samples(untrained.data, tmp_path / "start"))
    before = dict(start.policy.model.named_parameters())
    assert any(not torch.equal(before[k], v) for k, v in weights[0].items())  # the step did train
    for name, value in weights[1].items():
        torch.testing.assert_close(value, weights[0][name], rtol=0, atol=1e-6, msg=name)


def _shift_sampling_logprobs(monkeypatch: pytest.MonkeyPatch, shift: float) -> None:
    """Sampling-time log-probs off by `shift` from the training forward's (bf16 cached decoding
    on a GPU differs from a training forward in this way)."""
    import dataclasses

    from revseg_agent.policies.qwen import QwenVLPolicy

    original = QwenVLPolicy._generate

    def shifted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        gens = original(self, *args, **kwargs)
        return [dataclasses.replace(g, logprobs=[lp + shift for lp in g.logprobs]) for g in gens]

    monkeypatch.setattr(QwenVLPolicy, "_generate", shifted)


@pytest.mark.slow
def test_old_logprobs_come_from_the_training_forward(
    tiny_policy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clip ratio is measured against a no-grad replay of the current policy, not against the
    sampling-time log-probs: shifting those changes no weight and clips nothing, and the gap
    between the two is logged."""
    results = []
    for name, shift in (("clean", 0.0), ("shifted", 0.5)):
        if shift:
            _shift_sampling_logprobs(monkeypatch, shift)
        recipe = tiny_grpo_recipe(tiny_policy_dir, tmp_path / name, max_steps=1, beta=0.01)
        trainer = GRPOTrainer(
            recipe, load_samples(recipe.data, tmp_path / name), extra_rewards={"low": low_token_share}
        )
        (metrics,) = trainer.train()
        results.append((metrics, {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}))
    (clean, clean_weights), (shifted, shifted_weights) = results
    assert clean["logprob_gap_max"] < 1e-3  # fp32 on a CPU: generation and replay agree
    assert shifted["logprob_gap_mean"] == pytest.approx(0.5, abs=1e-3)
    assert shifted["clip_fraction"] == clean["clip_fraction"] == 0.0
    assert shifted["grad_norm"] > 0
    for name, value in clean_weights.items():
        torch.testing.assert_close(shifted_weights[name], value, rtol=0, atol=1e-7, msg=name)
    columns = next(csv.reader((tmp_path / "shifted" / "metrics.csv").open()))
    assert {"logprob_gap_mean", "logprob_gap_max", "clip_fraction", "grad_norm"} <= set(columns)


@pytest.mark.slow
def test_max_grad_norm_clips_on_the_plain_path(tiny_policy_dir: Path, tmp_path: Path) -> None:
    moved = []
    for name, limit in (("free", None), ("clipped", 1e-14)):
        recipe = tiny_grpo_recipe(tiny_policy_dir, tmp_path / name, max_steps=1, max_grad_norm=limit)
        trainer = GRPOTrainer(
            recipe, load_samples(recipe.data, tmp_path / name), extra_rewards={"low": low_token_share}
        )
        before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
        (metrics,) = trainer.train()
        assert metrics["grad_norm"] > 1e-6  # the norm before clipping
        after = {k: v.detach() for k, v in trainer.policy.model.named_parameters()}
        moved.append(max(float((after[k] - v).abs().max()) for k, v in before.items()))
    # AdamW normalises the gradient's scale, except where it falls below eps: a gradient clipped
    # to 1e-14 moves the weights by about lr * 1e-14 / 1e-8, a free one by about lr
    assert moved[1] < moved[0] * 1e-3
