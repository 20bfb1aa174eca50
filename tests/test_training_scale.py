"""Training at benchmark scale: ground truth read when rewarded, prompts in TRL's seeded order,
and a bounded number of checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from revseg_agent.eval.datasets import DatasetError, open_benchmark
from revseg_agent.synth import WorldSpec, write_world
from revseg_agent.training.data import benchmark_samples
from revseg_agent.training.recipe import BenchmarkData
from revseg_agent.training.sampler import PromptSampler

from .conftest import low_token_share, tiny_grpo_recipe


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "world"
    write_world(out, WorldSpec(seed=5, train=6, valid=0, test=0))
    return out / "train"


def test_samples_hold_references_and_read_the_truth_when_asked(world: Path) -> None:
    samples = benchmark_samples(BenchmarkData(dataset="mevis", root=str(world)))
    bench = open_benchmark("mevis", world)
    assert samples and all(s.gt_masks is None and s.gt_objects is None for s in samples)
    by_key = {s.key: s for s in bench.samples()}
    for sample in samples[:5]:
        masks, objects = sample.truth()
        assert np.array_equal(masks, bench.ground_truth(by_key[sample.sample_id]))
        assert np.array_equal(np.any(np.stack(objects), axis=0), masks)


def test_a_missing_annotation_is_an_error_before_training_starts(world: Path, tmp_path: Path) -> None:
    import shutil

    broken = Path(shutil.copytree(world, tmp_path / "broken"))
    masks = json.loads((broken / "mask_dict.json").read_text())
    masks.pop(sorted(masks)[0])
    (broken / "mask_dict.json").write_text(json.dumps(masks))
    with pytest.raises(DatasetError, match=r"not in mask_dict\.json"):
        benchmark_samples(BenchmarkData(dataset="mevis", root=str(broken)))


def test_expressions_without_a_target_are_left_out_without_decoding(world: Path, tmp_path: Path) -> None:
    import shutil

    emptied = Path(shutil.copytree(world, tmp_path / "emptied"))
    meta = json.loads((emptied / "meta_expressions.json").read_text())
    video, entry = sorted(meta["videos"].items())[0]
    exp_id, expression = sorted(entry["expressions"].items())[0]
    masks = json.loads((emptied / "mask_dict.json").read_text())
    for anno in expression["anno_id"]:
        masks[str(anno)] = [None] * len(entry["frames"])
    (emptied / "mask_dict.json").write_text(json.dumps(masks))
    keys = {s.sample_id for s in benchmark_samples(BenchmarkData(dataset="mevis", root=str(emptied)))}
    assert f"{video}__{exp_id}" not in keys and keys


def test_the_order_spans_videos_is_disjoint_across_processes_and_a_function_of_the_position(
    world: Path,
) -> None:
    samples = benchmark_samples(BenchmarkData(dataset="mevis", root=str(world)))
    videos = [s.sample_id.split("__")[0] for s in samples]
    sampler = PromptSampler(len(samples), seed=0)
    first = [videos[sampler.index(p)] for p in range(8)]
    in_order = videos[:8]
    assert len(set(first)) > len(set(in_order)) and len(set(first)) >= 4, (first, in_order)
    # one epoch is a permutation; the next epoch another one
    epoch0 = [sampler.index(p) for p in range(len(samples))]
    epoch1 = [sampler.index(len(samples) + p) for p in range(len(samples))]
    assert sorted(epoch0) == sorted(epoch1) == list(range(len(samples))) and epoch0 != epoch1
    # two processes, 2 prompts each per step: positions (step * 2 + rank) * 2 + i
    ranks = [
        {sampler.index((step * 2 + rank) * 2 + i) for step in range(2) for i in range(2)} for rank in (0, 1)
    ]
    assert not ranks[0] & ranks[1]
    # a fresh sampler (a resumed process) gives the same prompt at every position
    again = PromptSampler(len(samples), seed=0)
    assert [again.index(p) for p in range(3 * len(samples))][::-1] == [
        sampler.index(p) for p in reversed(range(3 * len(samples)))
    ]
    assert [PromptSampler(len(samples), seed=0, shuffle=False).index(p) for p in range(5)] == list(range(5))


@pytest.mark.slow
def test_save_total_limit_keeps_the_newest_checkpoints_and_a_run_resumes_from_them(
    tiny_policy_dir: Path, tmp_path: Path
) -> None:
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.trainer import GRPOTrainer

    recipe = tiny_grpo_recipe(tiny_policy_dir, tmp_path / "run", max_steps=3, save_total_limit=2)
    samples = load_samples(recipe.data, tmp_path / "run")
    GRPOTrainer(recipe, samples, extra_rewards={"low": low_token_share}).train()
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    resumed = GRPOTrainer(
        recipe.model_copy(update={"max_steps": 4}),
        samples,
        extra_rewards={"low": low_token_share},
        resume=True,
    )
    assert resumed.step == 3
    resumed.train()
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]


@pytest.mark.slow
def test_the_on_policy_ratio_is_exactly_one_with_lora_dropout(
    tiny_policy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One update per batch: old log-probs are the loss forward's own, detached, so the ratio
    is 1 on every token although `lora_dropout` 0.3 drops different inputs on every forward."""
    from revseg_agent.training import trainer as trainer_module
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.recipe import LoraConfig

    seen: list[tuple[object, object]] = []
    terms = trainer_module.grpo_token_terms

    def recorded(new, old, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((new.detach().clone(), old.clone()))
        return terms(new, old, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "grpo_token_terms", recorded)
    recipe = tiny_grpo_recipe(
        tiny_policy_dir,
        tmp_path / "run",
        max_steps=2,
        lora=LoraConfig(r=4, alpha=8, dropout=0.3, target_modules=["q_proj", "v_proj"]),
    )
    trainer = trainer_module.GRPOTrainer(
        recipe, load_samples(recipe.data, tmp_path / "run"), extra_rewards={"low": low_token_share}
    )
    history = trainer.train()
    assert seen and all(torch.equal(new, old) for new, old in seen)  # exp(new - old) == 1
    assert all(m["clip_fraction"] == 0.0 for m in history)


# -- TRL's options, under TRL's names, against TRL's formulas --------------------------------------


def test_epsilon_high_clips_the_ratio_above_as_trl_does() -> None:
    from revseg_agent.training.loss import grpo_token_terms

    new, old = torch.log(torch.tensor([1.3, 0.7, 1.25])), torch.zeros(3)
    for advantage in (1.0, -1.0):
        got = grpo_token_terms(new, old, advantage, clip_epsilon=0.2, epsilon_high=0.28)
        # TRL 1.16 `_compute_loss`: coef_1 = exp(logp - old); coef_2 = clamp(coef_1, 1 - eps_low,
        # 1 + eps_high); per_token_loss = -min(coef_1 * A, coef_2 * A)
        coef_1 = torch.exp(new - old)
        coef_2 = torch.clamp(coef_1, 1 - 0.2, 1 + 0.28)
        torch.testing.assert_close(got.loss, -torch.minimum(coef_1 * advantage, coef_2 * advantage))
    assert grpo_token_terms(new, old, 1.0, clip_epsilon=0.2, epsilon_high=0.28).clipped.tolist() == [
        True,
        False,
        False,
    ]


def test_served_rollouts_are_weighted_by_truncated_importance_ratios() -> None:
    from revseg_agent.training.loss import grpo_token_terms, importance_weights

    replayed, served = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.1, -0.5, -0.5])
    weights = importance_weights(replayed, served, cap=2.0)
    # TRL: importance_sampling_ratio = exp(old_per_token_logps - sampling_per_token_logps),
    # clamped at vllm_importance_sampling_cap; per_token_loss *= importance_sampling_ratio
    torch.testing.assert_close(weights, torch.clamp(torch.exp(replayed - served), max=2.0))
    plain = grpo_token_terms(replayed, replayed, 0.5, clip_epsilon=0.2)
    weighted = grpo_token_terms(replayed, replayed, 0.5, clip_epsilon=0.2, token_weights=weights)
    torch.testing.assert_close(weighted.loss, plain.loss * weights)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_the_learning_rate_follows_transformers_schedules(kind: str) -> None:
    import transformers

    from revseg_agent.training.loss import learning_rate_factor

    total, ratio = 20, 0.15
    warmup = 3  # ceil(0.15 * 20)
    make = {
        "linear": transformers.get_linear_schedule_with_warmup,
        "cosine": transformers.get_cosine_schedule_with_warmup,
        "constant": lambda opt, w, _t: transformers.get_constant_schedule_with_warmup(opt, w),
    }[kind]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = make(optimizer, warmup, total)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    got = [learning_rate_factor(kind, step, total, ratio) for step in range(total)]
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_truncated_completions_are_left_out_of_the_loss(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """With 4 new tokens the random policy never ends a turn: every completion is cut, so with
    `mask_truncated_completions` nothing is learned; without it the weights move."""
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.trainer import GRPOTrainer

    moved = {}
    for mask in (True, False):
        recipe = tiny_grpo_recipe(
            tiny_policy_dir,
            tmp_path / str(mask),
            max_steps=1,
            max_new_tokens=4,
            mask_truncated_completions=mask,
        )
        trainer = GRPOTrainer(
            recipe, load_samples(recipe.data, tmp_path / str(mask)), extra_rewards={"low": low_token_share}
        )
        before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
        trainer.train()
        moved[mask] = any(not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters())
    assert moved == {True: False, False: True}


@pytest.mark.slow
def test_sft_honours_the_recipe_s_output_dir_and_steps_fp32_masters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from revseg_agent.app.cli import main
    from revseg_agent.training import optimization

    built: list[bool] = []
    build = optimization.build_optimizer

    def recorded(params, **kwargs):  # type: ignore[no-untyped-def]
        built.append(kwargs["master_weights"])
        return build(params, **kwargs)

    monkeypatch.setattr(optimization, "build_optimizer", recorded)
    recipe = tmp_path / "sft.yaml"
    out = tmp_path / "runs" / "sft"
    recipe.write_text(
        "trainer: sft\npolicy: tiny-random\ndata: {kind: generated, num_samples: 2, num_frames: 6}\n"
        f"output_dir: {out}\nprompts_per_step: 1\nnum_frames: 4\nmax_new_tokens: 12\ndevice: cpu\n"
    )
    assert main(["train", "sft", "--config", str(recipe), "--max-steps", "1"]) == 0
    assert (out / "policy" / "model.safetensors").is_file() and built == [True]
    assert json.loads((out / "policy" / "generation_config.json").read_text())["max_new_tokens"] == 12
