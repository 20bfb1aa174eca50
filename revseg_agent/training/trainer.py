"""GRPO on replayed graph traces.

Each optimizer step: for `prompts_per_step` samples per micro-batch (x accumulation x processes),
run the graph `group_size` times with sampling, score each rollout's trace with the rewards
(`rewards.compute_rewards`, gated along the chain), turn them into advantages (`scale_rewards`),
then replay every policy call of every rollout through the policy (round 1 with its video, round
2 with the keyframe): first without gradients, to get the "old" log-probs from the same training
forward the loss uses (as verl does: generation-time log-probs differ from it in bf16 on a GPU,
which would show up as spurious clipping), then with gradients, minimising the clipped GRPO
objective with a KL penalty to a frozen reference, aggregated as `loss_type` says
(`training.loss`). Off-policy warm-start steps on stored traces use the stored sampling-time
log-probs as "old" instead (the clip then keeps the update near the policy that wrote them).
Checkpoints hold the weights (safetensors), the processor, the optimizer state and the step;
a trainer built with `resume=True` continues from the latest with the same optimizer state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revseg_agent.errors import InputError
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.names import POLICY_NODES
from revseg_agent.graphs.pipeline import trace_from_state
from revseg_agent.graphs.registry import load_tracker
from revseg_agent.graphs.traces import StepRecord, Trace
from revseg_agent.io import atomic_write_text
from revseg_agent.policies.base import Policy, SamplingParams
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.training.data import GroundTruth, TrainingSample
from revseg_agent.training.loss import (
    advantages,
    grpo_token_terms,
    importance_weights,
    sample_std,
    sequence_divisor,
)
from revseg_agent.training.metrics_log import append_csv, keep_csv_steps_up_to, plot_metrics
from revseg_agent.training.model_setup import load_trainable_policy
from revseg_agent.training.optimization import Optimization
from revseg_agent.training.recipe import Recipe
from revseg_agent.training.replay import ReplayPlan, plan_replay, run_plan
from revseg_agent.training.rewards import RewardFunc, compute_rewards
from revseg_agent.training.rollouts import run_group
from revseg_agent.training.served_rollouts import AdapterPublisher, require_token_ids
from revseg_agent.training.store import TraceRecord, TraceStore, rescore
from revseg_agent.training.trainer_base import TrainerBase
from revseg_agent.video import FrameCache

logger = logging.getLogger(__name__)


@dataclass
class Group:
    """The G rollouts of one sample (or one stored group) with their rewards and advantages."""

    traces: list[Trace]
    rewards: list[dict[str, float | None]]
    advantages: list[float] = field(default_factory=list)


@dataclass
class Replay:
    """One rollout to learn from: its policy steps and, per step, the old and reference log-probs."""

    trace: Trace
    advantage: float
    micro_batch: int
    weight: float = 1.0
    old: list[torch.Tensor] = field(default_factory=list)
    ref: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def steps(self) -> list[StepRecord]:
        return policy_steps(self.trace)


def policy_steps(trace: Trace) -> list[StepRecord]:
    """The policy calls of a rollout that wrote tokens (round 1 and round 2 attempts)."""
    return [s for s in trace.steps if s.node in POLICY_NODES and s.completion_ids]


class GRPOTrainer(TrainerBase):
    """Trains a Qwen2.5-VL policy on the ReVSeg chain from a `Recipe`.

    The constructor loads everything (policy, LoRA, reference, optimizer, DeepSpeed engine, and
    with `resume` the latest checkpoint); `train` runs the steps. On a GPU it first checks the
    recipe's memory plan (`training.plan`) against the device and refuses one that cannot fit.
    Use it as a context manager (or `close` it) so a distributed run ends cleanly.
    """

    command = "train-grpo"

    def __init__(
        self,
        recipe: Recipe,
        samples: Sequence[TrainingSample],
        *,
        output_dir: str | Path | None = None,
        extra_rewards: dict[str, RewardFunc] | None = None,
        resume: bool = False,
    ) -> None:
        """`extra_rewards` are added to the recipe's rewards with weight 1 (TRL signature)."""
        super().__init__(recipe, samples, output_dir=output_dir, resume=resume)
        self.recipe = recipe
        self.extra_rewards = extra_rewards or {}
        self.policy, self.reference = self._load(self.resume_from)
        #: The optimizer, gradient averaging and clipping, or the DeepSpeed engine (shared with SFT).
        self.optimization = Optimization(self.policy.model, recipe, self.dist)
        self._resume_optimization()
        #: Served rollouts: keeps the server's adapters at this run's step (`served_rollouts`).
        self.publisher = (
            AdapterPublisher(recipe.rollout_server, self.out, self.policy.inputs)
            if recipe.rollout_server is not None
            else None
        )
        self._served_step: int | None = None

    # -- set-up and checkpoints ----------------------------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimization.optimizer

    @property
    def engine(self) -> Any:
        """The DeepSpeed engine when the recipe names a DeepSpeed config (it owns backward/step)."""
        return self.optimization.engine

    def _load(self, ckpt: Path | None) -> tuple[QwenVLPolicy, Any]:
        """The policy (from `ckpt` when resuming), wrapped with LoRA when the recipe asks, and the
        KL reference: always the starting policy (TRL's `create_reference_model`; for LoRA the
        base model with the adapters disabled, so no second copy of the weights)."""
        r = self.recipe
        base = self.base_policy
        policy = load_trainable_policy(r, base, ckpt, self.device)
        model = policy.model
        reference = None
        if r.beta > 0 and r.lora is None:
            from trl.experimental.utils import create_reference_model

            initial = (
                QwenVLPolicy.from_pretrained(base, device=self.device, dtype=r.dtype).model if ckpt else model
            )
            reference = (
                create_reference_model(initial) if initial is model else initial.eval().requires_grad_(False)
            )
        return policy, reference

    def save_checkpoint(self) -> Path:
        """Write `checkpoint-<step>` (`Optimization.save_checkpoint`). Called by every process
        under DeepSpeed (each writes its optimizer shard), else by the main process only."""
        return self.optimization.save_checkpoint(self.out, self.step, self.policy)

    # -- rollouts and rewards -----------------------------------------------------------------
    def _context(self, rollout_seed: int, policy: Policy) -> Context:
        r = self.recipe
        return Context(
            policy=policy,
            tracker=load_tracker(r.tracker),
            num_frames=r.num_frames,
            max_attempts=1,
            on_parse_failure="fallback",
            sampling=SamplingParams(
                do_sample=True, temperature=r.temperature, max_new_tokens=r.max_new_tokens, seed=rollout_seed
            ),
            run_tracker=(r.rewards.weights.get("mask", 0.0) != 0.0),
            artifacts_dir=self.out / ".artifacts",
        )

    def sync_rollout_server(self) -> None:
        """Served rollouts: make the server sample with this step's weights (the main process
        publishes the adapters; every process waits for it). Local rollouts: nothing to do."""
        if self.publisher is None or self._served_step == self.step:
            return
        if self.dist.is_main_process:
            self.publisher.publish(self.policy.model, self.step)
        self.dist.wait_for_everyone()
        self._served_step = self.step

    def rollout_policy(self) -> Policy:
        """What samples the rollouts: the local policy, or the server with this step's adapters."""
        if self.publisher is None:
            return self.policy
        self.sync_rollout_server()
        return self.publisher.policy(self.step)

    def rollouts(self, sample: TrainingSample, step: int) -> list[Trace]:
        self.policy.model.eval()
        policy = self.rollout_policy()
        seed = self.recipe.seed + 100_003 * step + 7_919 * self.dist.process_index + hash_id(sample.sample_id)
        contexts = [self._context(seed + 101 * g, policy) for g in range(self.recipe.group_size)]
        # The group runs concurrently; its policy calls are batched (see rollouts.run_group).
        states = run_group(build_graph(), {"video_path": sample.video_path, "query": sample.query}, contexts)
        traces = [trace_from_state(state, context) for state, context in zip(states, contexts, strict=True)]
        if self.publisher is not None:
            require_token_ids(traces, self.publisher.config.url)
        return traces

    def _rewards(self, traces: list[Trace], truth: GroundTruth) -> list[dict[str, float | None]]:
        masks, objects = truth
        return compute_rewards(
            traces,
            self.recipe.rewards,
            gt_masks=[masks] * len(traces),
            gt_objects=[objects] * len(traces),
            extra=self.extra_rewards,
        )

    def held_out_rewards(self, samples: Sequence[TrainingSample]) -> dict[str, float]:
        """Mean reward per component over `group_size` rollouts of each sample, with rollout
        seeds no training step uses (those of step `HELD_OUT_STEP`) and no update: the same
        number before and after a run for unchanged weights, so the difference is what it learned."""
        rows: list[dict[str, float | None]] = []
        self.sync_rollout_server()
        for sample in samples:
            rows += self._rewards(self.rollouts(sample, HELD_OUT_STEP), sample.truth())
        return mean_rewards(rows)

    def _collect(self, batch: list[TrainingSample], store: TraceStore | None) -> list[Group]:
        """Rollouts and rewards for each sample of a micro-batch (and store them)."""
        groups = []
        policy_name = self.rollout_policy().name
        for sample in batch:
            traces = self.rollouts(sample, self.step)
            truth = sample.truth()  # decoded for this group only, released with it
            rewards = self._rewards(traces, truth)
            groups.append(Group(traces, rewards))
            if store is None:
                continue
            gt_path = store.save_ground_truth(sample.sample_id, *truth)
            for i, (trace, row) in enumerate(zip(traces, rewards, strict=True)):
                store.append(
                    TraceRecord(
                        sample_id=sample.sample_id,
                        group_id=f"{self.step}:{sample.sample_id}",
                        index=i,
                        step=self.step,
                        policy=policy_name,
                        ground_truth=gt_path,
                        trace=trace,
                        rewards=row,
                    )
                )
        return groups

    def _set_advantages(self, micro_batches: list[list[Group]]) -> None:
        """Advantages of every group of the step; `scale_rewards="batch"` takes the std over the
        whole step on every process (gathered), as TRL does over its generation batch."""
        groups = [g for micro in micro_batches for g in micro]
        totals = [[float(row.get("total") or 0.0) for row in g.rewards] for g in groups]
        batch_std = None
        if self.recipe.scale_rewards == "batch" and self.dist.num_processes > 1:
            from accelerate.utils import gather

            flat = torch.tensor([r for t in totals for r in t], dtype=torch.float64, device=self.dist.device)
            batch_std = sample_std(gather(flat).cpu().numpy())
        scaled = advantages(totals, self.recipe.scale_rewards, batch_std=batch_std)
        for group, adv in zip(groups, scaled, strict=True):
            group.advantages = adv

    def stored_groups(self) -> list[Group]:
        """The warm-start traces as groups, with rewards (re)computed."""
        spec = self.recipe.warm_start
        assert spec is not None
        path = Path(spec.traces)
        if not path.is_file():
            raise FileNotFoundError(f"warm-start traces not found: {path}")
        records = list(TraceStore(path))
        if spec.rescore:
            records = rescore(records, self.recipe.rewards)
        by_group: dict[str, list[TraceRecord]] = {}
        for record in records:
            by_group.setdefault(record.group_id, []).append(record)
        groups = []
        for members in by_group.values():
            members.sort(key=lambda m: m.index)
            groups.append(Group([m.trace for m in members], [dict(m.rewards) for m in members]))
        if not groups:
            raise ValueError(f"no traces in {path}")
        return groups

    # -- learning -------------------------------------------------------------------------------
    @torch.no_grad()
    def _reference_logprobs(self, plan: ReplayPlan) -> list[torch.Tensor]:
        temperature = self.recipe.temperature
        if self.reference is not None:
            return run_plan(_as_policy(self.policy, self.reference), plan, temperature)
        with self.policy.model.disable_adapter():  # LoRA: the base model is the reference
            return run_plan(self.policy, plan, temperature)

    def _replays(self, micro_batches: list[list[Group]], on_policy: bool, frames: FrameCache) -> list[Replay]:
        """The rollouts that add to the gradient, each with its reference log-probs and, off
        policy (warm start), its old log-probs: the stored sampling-time ones.

        On policy the old log-probs are the loss forward's own, detached (TRL's rule with one
        update per batch, `num_iterations=1`): the weights do not change before this step's one
        optimizer step, so the ratio is exactly 1 and its gradient is that of log p, whatever
        dropout the train-mode forward applies (LoRA's `lora_dropout` included). A separate
        eval-mode forward would see no dropout and put the ratio off 1 (measured: mean
        |delta log p| 0.027 at `lora_dropout` 0.05). The reference runs without dropout (eval mode,
        or the base model with the adapters off)."""
        r = self.recipe
        replays = [
            Replay(trace, advantage, k)
            for k, micro in enumerate(micro_batches)
            for group in micro
            for trace, advantage in zip(group.traces, group.advantages, strict=True)
            if policy_steps(trace)
        ]
        todo = [x for x in replays if x.advantage != 0.0 or r.beta != 0]  # others add exactly zero
        if self.engine is not None:
            todo = self._same_backward_count(todo, replays)
        self.policy.model.eval()
        for replay in todo:
            steps = replay.steps
            replay.old = [torch.tensor(s.logprobs) for s in steps]  # on policy: replaced in `_learn`
            if r.beta == 0:
                replay.ref = [None] * len(steps)
                continue
            plan = plan_replay(self.policy, steps, frames_cache=frames)
            replay.ref = list(self._reference_logprobs(plan))
        return todo

    def _same_backward_count(self, todo: list[Replay], replays: list[Replay]) -> list[Replay]:
        """Under DeepSpeed every rank must run the same number of backward passes (ZeRO-2 reduces
        gradients in each one), and at least one: pad with weight-0 replays, which contribute
        zero gradient but take part in the collectives."""
        count = len(todo)
        if self.dist.num_processes > 1:
            total = torch.tensor([count], device=self.dist.device)
            torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.MAX)
            count = int(total.item())
        count = max(count, 1)
        if len(todo) < count:
            if not replays:
                raise RuntimeError("no rollout on this rank wrote tokens to replay; DeepSpeed needs one")
            pad = replays[0]
            todo = todo + [
                Replay(pad.trace, pad.advantage, pad.micro_batch, weight=0.0)
                for _ in range(count - len(todo))
            ]
        return todo

    def _learn(
        self, micro_batches: list[list[Group]], started: float, *, on_policy: bool
    ) -> dict[str, float]:
        """Advantages, old/reference log-probs, the backward passes and one optimizer step."""
        r = self.recipe
        self._set_advantages(micro_batches)
        frames = FrameCache()
        todo = self._replays(micro_batches, on_policy, frames)
        lengths: dict[int, list[int]] = {}
        for k, micro in enumerate(micro_batches):
            lengths[k] = [
                len(s.completion_ids)
                for g in micro
                for t in g.traces
                for s in policy_steps(t)
                if not self._masked(s)
            ]
        local_tokens = sum(sum(v) for v in lengths.values())
        step_tokens = float(local_tokens)
        if self.dist.num_processes > 1 and r.loss_type == "dapo":
            from accelerate.utils import reduce

            step_tokens = float(reduce(torch.tensor([step_tokens], device=self.dist.device), "sum").item())
        tokens_per_process = step_tokens / self.dist.num_processes
        accumulation = len(micro_batches)
        loss_sum = kl_sum = clipped = gap_sum = 0.0
        gap_max = 0.0
        gap_tokens = 0
        self.policy.model.train()
        for k, replay in enumerate(todo):
            steps = replay.steps
            plan = plan_replay(self.policy, steps, frames_cache=frames)
            # under DeepSpeed the engine runs the forward (its hooks), then owns backward and step
            news = run_plan(self.policy, plan, r.temperature, model=self.engine)
            loss = news[0].sum() * 0.0  # in the graph even when every step is masked: backward runs
            for step, new, old, ref in zip(steps, news, replay.old, replay.ref, strict=True):
                if self._masked(step):  # cut at max_new_tokens: out of the loss (TRL's option)
                    continue
                old = new.detach() if on_policy else old.to(device=new.device, dtype=new.dtype)
                ref = None if ref is None else ref.to(device=new.device, dtype=new.dtype)
                weights = None
                if self.publisher is not None and r.vllm_importance_sampling_correction:
                    sampled = torch.tensor(step.logprobs, device=new.device, dtype=new.dtype)
                    weights = importance_weights(new, sampled, r.vllm_importance_sampling_cap)
                terms = grpo_token_terms(
                    new,
                    old,
                    replay.advantage,
                    clip_epsilon=r.clip_epsilon,
                    ref=ref,
                    beta=r.beta,
                    epsilon_high=r.epsilon_high,
                    token_weights=weights,
                )
                divisor = sequence_divisor(
                    r.loss_type,
                    len(step.completion_ids),
                    lengths[replay.micro_batch],
                    max_completion_length=r.max_new_tokens,
                    accumulation=accumulation,
                    step_tokens_per_process=tokens_per_process,
                )
                loss = loss + terms.loss.sum() * replay.weight / divisor
                kl_sum += float(terms.kl.detach().sum()) * replay.weight
                clipped += float(terms.clipped.sum()) * replay.weight
                if on_policy and replay.weight:
                    gap = (torch.tensor(step.logprobs) - old.detach().float().cpu()).abs()
                    gap_sum += float(gap.sum())
                    gap_max = max(gap_max, float(gap.max()))
                    gap_tokens += len(gap)
            self.optimization.backward(loss, last=k == len(todo) - 1)
            loss_sum += float(loss.detach())
        self.policy.model.eval()
        grad_norm = self._optimizer_step()
        all_groups = [g for micro in micro_batches for g in micro]
        metrics: dict[str, float] = {"step": float(self.step), "learning_rate": self.last_learning_rate}
        rows = [row for g in all_groups for row in g.rewards]
        metrics.update({f"reward_{name}": value for name, value in mean_rewards(rows).items()})
        rollouts = [t for g in all_groups for t in g.traces]
        counted = max(sum(len(s.completion_ids) for x in todo if x.weight for s in x.steps), 1)
        metrics["loss"] = loss_sum
        metrics["kl"] = kl_sum / counted
        metrics["clip_fraction"] = clipped / counted
        metrics["grad_norm"] = grad_norm
        metrics["logprob_gap_mean"] = gap_sum / gap_tokens if gap_tokens else float("nan")
        metrics["logprob_gap_max"] = gap_max if gap_tokens else float("nan")
        metrics["completion_tokens"] = local_tokens / max(len(rollouts), 1)
        metrics["turns"] = float(np.mean([len(policy_steps(t)) for t in rollouts]))
        metrics["seconds"] = time.time() - started
        return self.optimization.average_metrics(metrics)

    def _masked(self, step: StepRecord) -> bool:
        """Whether `mask_truncated_completions` leaves this policy step out of the loss: it
        reached `max_new_tokens` without an end-of-turn token."""
        if not self.recipe.mask_truncated_completions:
            return False
        ids = step.completion_ids
        return len(ids) >= self.recipe.max_new_tokens and (
            not ids or ids[-1] not in self.policy.eos_token_ids
        )

    def learning_rate(self) -> float:
        """This optimizer step's learning rate (`lr_scheduler_type`, `warmup_ratio` over the
        recipe's `max_steps`): a function of the step, so a resumed run continues it exactly."""
        return self.optimization.learning_rate(self.step)

    def _optimizer_step(self) -> float:
        """Average gradients over processes, clip them to `max_grad_norm`, step at this step's
        learning rate; the norm before clipping is returned (DeepSpeed clips and reports it)."""
        norm, self.last_learning_rate = self.optimization.step(self.step)
        self.step += 1
        return norm

    def warm_start_step(self, groups: list[Group]) -> dict[str, float]:
        """One optimizer step on stored groups (off-policy)."""
        started = time.time()
        r = self.recipe
        first = (self.step * self.dist.num_processes + self.dist.process_index) * r.prompts_per_step
        batch = [groups[(first + i) % len(groups)] for i in range(r.prompts_per_step)]
        metrics = self._learn([batch], started, on_policy=False)
        metrics["off_policy"] = 1.0
        return metrics

    def train_step(self, store: TraceStore | None = None) -> dict[str, float]:
        """One optimizer step over `gradient_accumulation_steps` micro-batches of
        `prompts_per_step` samples, each sample with `group_size` rollouts."""
        r = self.recipe
        started = time.time()
        accumulation = max(r.gradient_accumulation_steps, 1)
        self.sync_rollout_server()  # every process, before any rollout of the step
        micro_batches = []
        for micro in range(accumulation):
            index = (self.step * accumulation + micro) * self.dist.num_processes + self.dist.process_index
            first = index * r.prompts_per_step
            batch = [self.samples[self.sampler.index(first + i)] for i in range(r.prompts_per_step)]
            micro_batches.append(self._collect(batch, store))
        return self._learn(micro_batches, started, on_policy=True)

    def train(
        self, *, max_steps: int | None = None, on_step: Callable[[dict[str, float]], None] | None = None
    ) -> list[dict[str, float]]:
        limit = max_steps if max_steps is not None else self.recipe.max_steps
        main = self.dist.is_main_process
        rank = self.dist.process_index
        store = TraceStore(self.out / ("traces.jsonl" if main else f"traces-rank{rank}.jsonl"))
        warm = self.recipe.warm_start
        if warm is not None and Path(warm.traces).resolve() == store.path.resolve():
            raise InputError(
                f"the warm-start traces {warm.traces} are this run's own trace store, which the run "
                "rewrites: copy them to another file first"
            )
        # A resumed run repeats the steps after its checkpoint (a fresh one starts over): their
        # rollouts and metric rows from the earlier attempt go, so nothing is counted twice.
        dropped = store.keep_steps_before(self.step)
        if main:
            dropped_rows = keep_csv_steps_up_to(self.out / "metrics.csv", self.step)
            if dropped or dropped_rows:
                logger.info(
                    "dropped %d rollouts and %d metric rows after step %d", dropped, dropped_rows, self.step
                )
        trackers = self._trackers() if main else []
        history = []
        stored = self.stored_groups() if warm is not None and self.step < warm.steps else []
        while self.step < limit:
            try:
                if warm is not None and self.step < warm.steps:
                    metrics = self.warm_start_step(stored)
                else:
                    metrics = self.train_step(store)
            except BaseException:
                # Keep what the run has learned: the weights and optimizer state as of the last
                # completed step (this step's partial gradients are dropped).
                self.optimization.zero_grad()
                if self.step > 0 and self.optimization.can_save_after_failure():
                    logger.error("training stopped at step %d; saving a checkpoint first", self.step)
                    self.save_checkpoint()
                raise
            history.append(metrics)
            if main:
                append_csv(self.out / "metrics.csv", metrics)
                for tracker in trackers:
                    tracker.log({k: v for k, v in metrics.items() if k != "step"}, step=self.step)
                if on_step is not None:
                    on_step(metrics)
            due = self.step % self.recipe.save_every == 0 or self.step == limit
            if due and self.optimization.saves_checkpoints():
                self.save_checkpoint()
        for tracker in trackers:
            tracker.finish()
        if main:
            atomic_write_text(self.out / "recipe.json", self.recipe.model_dump_json(indent=2))
            plot_metrics(self.out / "metrics.csv", self.out / "metrics.png")
        self.dist.wait_for_everyone()
        return history

    def _trackers(self) -> list[Any]:
        trackers: list[Any] = []
        if "tensorboard" in self.recipe.report_to:
            from accelerate.tracking import TensorBoardTracker

            tracker = TensorBoardTracker("grpo", self.out / "tensorboard")
            tracker.start()
            trackers.append(tracker)
        return trackers


#: The step whose rollout seeds `held_out_rewards` uses (a run would need a million steps to meet it).
HELD_OUT_STEP = 1_000_000


def mean_rewards(rows: Sequence[Mapping[str, float | None]]) -> dict[str, float]:
    """Each reward's mean over the rows that have it (`None`: not defined for that rollout)."""
    names = sorted({k for row in rows for k in row})
    means = {}
    for name in names:
        values = [float(v) for row in rows if (v := row.get(name)) is not None]
        means[name] = float(np.mean(values)) if values else float("nan")
    return means


def _as_policy(policy: QwenVLPolicy, model: Any) -> QwenVLPolicy:
    """The same processor with another model (the frozen reference)."""
    return QwenVLPolicy(model, policy.processor, name=f"{policy.name} (reference)")


def hash_id(value: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "little")
