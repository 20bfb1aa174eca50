"""The GRPO objective, named as TRL names it: advantages (`scale_rewards`), the clipped per-token
surrogate with a KL penalty, and the loss aggregation (`loss_type`).

A "sequence" here is one policy completion (round 1 or round 2 of a rollout), TRL's completion;
a micro-batch is the rollouts of `prompts_per_step` samples (TRL's per-device batch). With
`n` sequences of lengths `T_i` in a micro-batch, `A` accumulation steps and per-token losses
`l_it`, each `loss_type` divides the sum of `l_it` as TRL 1.16's `GRPOTrainer._compute_loss`:

- `grpo`: each sequence's token mean, averaged over the micro-batch's sequences, / A.
- `bnpo`: the micro-batch's token mean, / A.
- `dr_grpo`: sum / (n * max_completion_length), / A (no length bias).
- `dapo`: sum / (tokens of the whole step over all processes / number of processes): every token
  of the global batch weighs the same (the default; what this project used before the names).

Gradients are then averaged over processes (as DDP does), so `dapo` is the global token mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
ScaleRewards = Literal["group", "batch", "none"]

#: EasyR1's bounds: the log-ratio inside the KL estimator and the per-token KL itself.
KL_LOG_RATIO_CLAMP = 20.0
KL_VALUE_CLAMP = 10.0


def sample_std(values: np.ndarray) -> float:
    """Standard deviation with Bessel's correction (TRL's `nanstd`); 0 for fewer than 2 values."""
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def advantages(
    groups: Sequence[Sequence[float]],
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
    *,
    batch_std: float | None = None,
) -> list[list[float]]:
    """Per-rollout advantages: reward minus its group's mean, divided (unless `none`) by the
    sample std of its group (`group`) or of every reward in the batch (`batch`; `batch_std` when
    the batch spans processes), plus `eps`. A group whose rewards are all equal gets zeros (no
    signal, no update from it)."""
    if scale_rewards == "batch" and batch_std is None:
        batch_std = sample_std(np.asarray([r for g in groups for r in g], dtype=np.float64))
    out = []
    for group in groups:
        r = np.asarray(group, dtype=np.float64)
        if len(r) == 0 or np.allclose(r, r[0]):
            out.append([0.0] * len(r))
            continue
        centred = r - r.mean()
        if scale_rewards == "group":
            centred = centred / (sample_std(r) + eps)
        elif scale_rewards == "batch":
            assert batch_std is not None
            centred = centred / (batch_std + eps)
        out.append(centred.tolist())
    return out


def group_advantages(rewards: Sequence[float], eps: float = 1e-4) -> list[float]:
    """One group's advantages with TRL's default scaling (`scale_rewards="group"`)."""
    return advantages([rewards], "group", eps)[0]


def k3_kl(ref: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Per-token KL estimate `exp(d) - d - 1`, `d = ref - new` (k3, "low_var_kl"), with the
    log-ratio and the result clamped as EasyR1 does, so one far-off token cannot blow up a step."""
    delta = (ref - new).clamp(-KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
    return (torch.exp(delta) - delta - 1).clamp(-KL_VALUE_CLAMP, KL_VALUE_CLAMP)


@dataclass
class TokenTerms:
    """Per-token pieces of one completion's objective."""

    loss: torch.Tensor
    kl: torch.Tensor
    #: Tokens whose ratio the clip held (TRL's `clip_ratio/region_mean`).
    clipped: torch.Tensor


def grpo_token_terms(
    new: torch.Tensor,
    old: torch.Tensor,
    advantage: float,
    *,
    clip_epsilon: float,
    ref: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_high: float | None = None,
    token_weights: torch.Tensor | None = None,
) -> TokenTerms:
    """loss_t = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps_high) * A) * w_t + beta * KL_t,
    with ratio_t = exp(new_t - old_t), eps_high = `epsilon_high` or eps, w_t the importance
    weights of served rollouts (1 without) and KL_t the clamped k3 estimate against `ref` (TRL's
    `_compute_loss`, term by term)."""
    high = clip_epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(new - old)
    clipped = torch.clamp(ratio, 1 - clip_epsilon, 1 + high)
    loss = -torch.minimum(ratio * advantage, clipped * advantage)
    if token_weights is not None:
        loss = loss * token_weights
    held = ((ratio < 1 - clip_epsilon) & (advantage < 0)) | ((ratio > 1 + high) & (advantage > 0))
    kl = torch.zeros_like(new)
    if ref is not None:
        kl = k3_kl(ref, new)
        loss = loss + beta * kl
    return TokenTerms(loss=loss, kl=kl, clipped=held.detach())


def sequence_divisor(
    loss_type: LossType,
    length: int,
    micro_batch_lengths: Sequence[int],
    *,
    max_completion_length: int,
    accumulation: int,
    step_tokens_per_process: float,
) -> float:
    """What one sequence's summed token losses are divided by under `loss_type` (module doc).

    `micro_batch_lengths`: the completion lengths of the sequence's micro-batch;
    `step_tokens_per_process`: completion tokens of the whole step over all processes, divided
    by the number of processes (dapo)."""
    n = max(len(micro_batch_lengths), 1)
    if loss_type == "grpo":
        return max(length, 1) * n * accumulation
    if loss_type == "bnpo":
        return max(sum(micro_batch_lengths), 1) * accumulation
    if loss_type == "dr_grpo":
        return n * max_completion_length * accumulation
    if loss_type == "dapo":
        return max(step_tokens_per_process, 1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def importance_weights(replayed: torch.Tensor, sampled: torch.Tensor, cap: float) -> torch.Tensor:
    """TRL's truncated importance sampling for served rollouts: min(exp(replayed - sampled), cap)
    per token, no gradient (`replayed`: the trainer's log-probs; `sampled`: the server's)."""
    return torch.clamp(torch.exp(replayed.detach() - sampled), max=cap)


def learning_rate_factor(kind: str, step: int, total: int, warmup_ratio: float) -> float:
    """The factor on the base learning rate at optimizer step `step` (0-based) of `total`, as
    transformers' `get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup` /
    `get_constant_schedule_with_warmup` give it (warm-up steps: ceil(warmup_ratio * total))."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
