"""The GRPO objective as TRL defines it: loss types against TRL's own `_compute_loss`, reward
scaling against TRL's `nanstd`, EasyR1's KL clamp, and fp32 master weights for bf16 models."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from revseg_agent.training.loss import (
    KL_VALUE_CLAMP,
    advantages,
    grpo_token_terms,
    k3_kl,
    sequence_divisor,
)
from revseg_agent.training.optim import MasterWeightAdamW, build_optimizer, clip_gradients

#: The TRL release whose `GRPOTrainer._compute_loss` (a private method) these tests compare our
#: objective with: pinned in the `dev` extra, checked below, so a TRL upgrade is a decision (re-read
#: its loss, move the pin) and never a silent change of what "TRL's loss" means.
TRL_REFERENCE = "1.16.0"
LENGTHS = [3, 5, 1, 4]
MAX_LEN = 6


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = len(LENGTHS)
    mask = torch.zeros(b, MAX_LEN)
    for i, n in enumerate(LENGTHS):
        mask[i, :n] = 1
    new = -torch.rand(b, MAX_LEN, generator=g) * 2
    return {
        "new": new,
        # ratios spread on both sides of the clip range, so clipping is exercised
        "old": new + (torch.rand(b, MAX_LEN, generator=g) - 0.5) * 0.8,
        "ref": new + (torch.rand(b, MAX_LEN, generator=g) - 0.5) * 0.4,
        "advantages": torch.tensor([1.0, -0.5, 2.0, -1.5]),
        "mask": mask,
    }


def test_trl_is_the_release_the_objective_is_checked_against() -> None:
    import trl

    assert trl.__version__ == TRL_REFERENCE, (
        f"TRL {trl.__version__} is installed; the loss tests read TRL {TRL_REFERENCE}'s private "
        "GRPOTrainer._compute_loss: install the dev extra, or re-read the new release's loss and move the pin"
    )


def _trl_loss(loss_type: str, batch: dict[str, torch.Tensor], new: torch.Tensor, beta: float) -> torch.Tensor:
    """TRL 1.16.0's `GRPOTrainer._compute_loss` itself, on a stand-in trainer whose model returns
    `new` as the per-token log-probs (one process, no accumulation, no vLLM, token level)."""
    from trl import GRPOTrainer

    b = len(LENGTHS)
    fake: Any = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (new, torch.zeros_like(new), None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        loss_type=loss_type,
        epsilon_low=0.2,
        epsilon_high=0.2,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        beta=beta,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=MAX_LEN,
        accelerator=SimpleNamespace(
            num_processes=1,
            reduce=lambda x, reduction="sum": x,
            gather=lambda x: x,
            gather_for_metrics=lambda x: x,
        ),
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long),
        "prompt_mask": torch.ones(b, 2),
        "completion_ids": torch.zeros(b, MAX_LEN, dtype=torch.long),
        "completion_mask": batch["mask"],
        "advantages": batch["advantages"],
        "old_per_token_logps": batch["old"],
        "ref_per_token_logps": batch["ref"],
        "num_items_in_batch": batch["mask"].sum(),
    }
    loss: torch.Tensor = GRPOTrainer._compute_loss(fake, None, inputs)
    return loss


def _our_loss(loss_type: str, batch: dict[str, torch.Tensor], new: torch.Tensor, beta: float) -> torch.Tensor:
    total = torch.zeros(())
    for i, n in enumerate(LENGTHS):
        terms = grpo_token_terms(
            new[i, :n],
            batch["old"][i, :n],
            float(batch["advantages"][i]),
            clip_epsilon=0.2,
            ref=batch["ref"][i, :n],
            beta=beta,
        )
        divisor = sequence_divisor(
            loss_type,  # type: ignore[arg-type]
            n,
            LENGTHS,
            max_completion_length=MAX_LEN,
            accumulation=1,
            step_tokens_per_process=float(sum(LENGTHS)),
        )
        total = total + terms.loss.sum() / divisor
    return total


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_each_loss_type_equals_trls_own_loss_and_gradient(loss_type: str, beta: float) -> None:
    batch = _batch()
    ours_new = batch["new"].clone().requires_grad_(True)
    trl_new = batch["new"].clone().requires_grad_(True)
    ours = _our_loss(loss_type, batch, ours_new, beta)
    theirs = _trl_loss(loss_type, batch, trl_new, beta)
    ours.backward()
    theirs.backward()
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-6, abs=1e-9)
    assert ours_new.grad is not None and trl_new.grad is not None
    torch.testing.assert_close(ours_new.grad * batch["mask"], trl_new.grad * batch["mask"])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        # one micro-batch of sequences with token-loss sums s = [3, 5, 1, 4], lengths [3, 5, 1, 4]
        ("grpo", (3 / 3 + 5 / 5 + 1 / 1 + 4 / 4) / 4),  # each sequence's mean, then the mean
        ("bnpo", 13 / 13),  # the micro-batch's token mean
        ("dr_grpo", 13 / (4 * MAX_LEN)),  # sum over (sequences x max completion length)
        ("dapo", 13 / 13),  # the step's token mean (one micro-batch, one process here)
    ],
)
def test_loss_aggregation_by_hand(loss_type: str, expected: float) -> None:
    sums = [float(n) for n in LENGTHS]  # every token's loss is 1
    kw: dict[str, Any] = {
        "max_completion_length": MAX_LEN,
        "accumulation": 1,
        "step_tokens_per_process": 13.0,
    }
    got = sum(s / sequence_divisor(loss_type, n, LENGTHS, **kw) for s, n in zip(sums, LENGTHS, strict=True))  # type: ignore[arg-type]
    assert got == pytest.approx(expected)


def test_dapo_weighs_every_token_of_the_step_the_same_across_micro_batches() -> None:
    """Two micro-batches (accumulation 2) of 2 and 10 tokens: dapo gives each token 1/12, bnpo
    gives the short micro-batch's tokens 1/4 each (its own mean, halved)."""
    kw: dict[str, Any] = {"max_completion_length": 8, "accumulation": 2, "step_tokens_per_process": 12.0}
    assert sequence_divisor("dapo", 2, [2], **kw) == sequence_divisor("dapo", 10, [10], **kw) == 12.0
    assert sequence_divisor("bnpo", 2, [2], **kw) == 4.0 and sequence_divisor("bnpo", 10, [10], **kw) == 20.0


def test_scale_rewards_match_trl_definitions() -> None:
    from trl.trainer.utils import nanstd

    groups = [[0.0, 1.0, 0.5, 0.5], [2.0, 2.0, 2.0, 2.0], [1.0, 0.0, 0.0, 0.0]]
    r = torch.tensor(groups, dtype=torch.float64)
    mean = r.mean(dim=1, keepdim=True)
    group_std = nanstd(r, dim=1, keepdim=True)
    batch_std = nanstd(r.flatten())
    expected = {
        "group": ((r - mean) / (group_std + 1e-4)),
        "batch": ((r - mean) / (batch_std + 1e-4)),
        "none": (r - mean),
    }
    for scale, want in expected.items():
        got = np.array(advantages(groups, scale))  # type: ignore[arg-type]
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-7, err_msg=scale)  # nanstd: fp32 correction
    assert advantages(groups, "group")[1] == [0.0] * 4  # all-equal group: no signal
    # the sample std (Bessel), not the population std
    assert advantages([[0.0, 1.0]], "group")[0][1] == pytest.approx(0.5 / (np.std([0, 1], ddof=1) + 1e-4))


def test_kl_is_k3_and_clamped_as_easyr1() -> None:
    new = torch.tensor([-1.0, -1.0, -30.0])
    ref = torch.tensor([-1.0, -0.5, -1.0])
    kl = k3_kl(ref, new)
    d = 0.5
    assert kl[:2].tolist() == pytest.approx([0.0, np.exp(d) - d - 1])
    assert float(kl[2]) == KL_VALUE_CLAMP  # unclamped: exp(29) - 30, which would swamp the step
    # a token the policy now gives probability 0: the clamped log-ratio keeps the estimate finite
    assert float(k3_kl(torch.tensor([-1.0]), torch.tensor([-float("inf")]))[0]) == KL_VALUE_CLAMP


# -- precision --------------------------------------------------------------------------------


def _models(tiny_policy_dir: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import Qwen2_5_VLForConditionalGeneration

    half = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_policy_dir, dtype=torch.bfloat16)
    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_policy_dir, dtype=torch.float32)
    with torch.no_grad():  # the fp32 reference starts from the very same (bf16-representable) values
        for p, q in zip(full.parameters(), half.parameters(), strict=True):
            p.copy_(q.float())
    return half, full


def _same_gradients(half: torch.nn.Module, full: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p, q in zip(full.parameters(), half.parameters(), strict=True):
        grad = torch.randn(p.shape, generator=g).to(torch.bfloat16)
        p.grad, q.grad = grad.float(), grad


def test_one_bf16_step_at_lr_1e6_moves_the_weights_as_fp32_does(tiny_policy_dir: Path) -> None:
    half, full = _models(tiny_policy_dir)
    before = [p.detach().clone() for p in full.parameters()]
    ours = build_optimizer(half.parameters(), learning_rate=1e-6, weight_decay=0.01, master_weights=True)
    reference = torch.optim.AdamW(full.parameters(), lr=1e-6, weight_decay=0.01)
    assert isinstance(ours, MasterWeightAdamW)
    _same_gradients(half, full, 0)
    ours.step()
    reference.step()
    for master, p, start in zip(ours.masters, full.parameters(), before, strict=True):
        torch.testing.assert_close(master - start, p.detach() - start, rtol=1e-3, atol=1e-12)
    # plain AdamW on the bf16 weights (the old behaviour) loses almost every update to rounding
    plain_model, _ = _models(tiny_policy_dir)
    start = [p.detach().clone() for p in plain_model.parameters()]
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-6, weight_decay=0.01)
    _same_gradients(plain_model, full, 0)
    plain.step()
    moved = sum(int((p != s).sum()) for p, s in zip(plain_model.parameters(), start, strict=True))
    total = sum(p.numel() for p in start)
    assert moved / total < 0.2


def test_master_weights_accumulate_into_the_model_and_resume_exactly(tiny_policy_dir: Path) -> None:
    half, full = _models(tiny_policy_dir)
    start = [p.detach().clone() for p in half.parameters()]
    opt = build_optimizer(half.parameters(), learning_rate=1e-6, weight_decay=0.0, master_weights=True)
    for _ in range(60):  # 60 updates of ~1e-6 exceed bf16's spacing near small weights
        _same_gradients(half, full, 0)
        opt.step()
        opt.zero_grad()
    moved = sum(int((p != s).sum()) for p, s in zip(half.parameters(), start, strict=True))
    assert moved / sum(s.numel() for s in start) > 0.5
    state = opt.state_dict()
    again = build_optimizer(half.parameters(), learning_rate=1e-6, weight_decay=0.0, master_weights=True)
    again.load_state_dict(state)
    assert isinstance(again, MasterWeightAdamW) and isinstance(opt, MasterWeightAdamW)
    for a, b in zip(again.masters, opt.masters, strict=True):
        assert torch.equal(a, b)  # the fp32 values, not their bf16 roundings


def test_fp32_models_get_plain_adamw_and_gradients_are_clipped() -> None:
    layer = torch.nn.Linear(4, 4)
    assert type(
        build_optimizer(layer.parameters(), learning_rate=1e-3, weight_decay=0.0, master_weights=True)
    ) is (torch.optim.AdamW)
    layer.weight.grad = torch.full_like(layer.weight, 3.0)
    layer.bias.grad = torch.full_like(layer.bias, 4.0)
    norm = clip_gradients(layer.parameters(), 1.0)
    assert norm == pytest.approx(float(np.sqrt(16 * 9 + 4 * 16)))
    after = torch.cat([layer.weight.grad.flatten(), layer.bias.grad.flatten()]).norm()
    assert float(after) == pytest.approx(1.0, rel=1e-5)


def test_sampled_token_logprobs_keep_one_step_of_logits() -> None:
    """The recorder returns log_softmax(raw / T) at each chosen token, as `output_logits` did,
    while holding one step's distribution at a time."""
    from revseg_agent.policies.sampled_logprobs import SampledTokenLogprobs

    g = torch.Generator().manual_seed(0)
    steps = [torch.randn(2, 7, generator=g) for _ in range(3)]
    chosen = torch.tensor([[1, 4, 6], [0, 0, 3]])
    prompt = torch.tensor([[9, 9], [9, 9]])
    recorder = SampledTokenLogprobs(prompt_length=2, temperature=0.7)
    ids = prompt
    for t, scores in enumerate(steps):
        assert torch.equal(recorder(ids, scores), scores)  # scores pass through unchanged
        ids = torch.cat([ids, chosen[:, t : t + 1]], dim=1)
    got = recorder.finish(ids)
    full = torch.log_softmax(torch.stack(steps, dim=1) / 0.7, dim=-1)
    torch.testing.assert_close(got, full.gather(-1, chosen.unsqueeze(-1)).squeeze(-1))


def test_generation_asks_for_no_logits(tiny_policy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from revseg_agent.policies.base import ChatMessage, ImageFrame, SamplingParams, TextPart, VisualPart
    from revseg_agent.policies.qwen import QwenVLPolicy
    from revseg_agent.policies.sampled_logprobs import SampledTokenLogprobs

    policy = QwenVLPolicy.from_pretrained(str(tiny_policy_dir), device="cpu")
    seen: dict[str, Any] = {}
    original = policy.model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(policy.model, "generate", spy)
    chat = [ChatMessage(role="user", content=[VisualPart(type="image", ref="img"), TextPart(text="where?")])]
    image = ImageFrame(np.zeros((56, 56, 3), np.uint8))
    (gen,) = policy.generate(
        chat, {"img": image}, sampling=SamplingParams(do_sample=True, max_new_tokens=4, seed=0)
    )
    assert not seen.get("output_logits") and not seen.get("output_scores")
    assert isinstance(seen["logits_processor"][0], SampledTokenLogprobs)
    assert len(gen.logprobs) == len(gen.completion_ids) and all(lp <= 0 for lp in gen.logprobs)
