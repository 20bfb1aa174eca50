"""GRPO on replayed graph traces.

Each step: for a few training samples, run the graph `group_size` times with sampling (G
rollouts per sample), score each rollout's trace with the configured rewards, normalise the
rewards within the group (advantages), then replay every policy call of every rollout through
the policy (round 1 with its video, round 2 with the keyframe) and minimise the clipped GRPO
objective on the tokens the policy wrote, with a KL penalty to a frozen reference (k3 estimator,
`beta`). Loss is averaged over all completion tokens of the step (token-level, as DAPO / TRL's
default). A group whose rewards are all equal gets zero advantages (no signal, no update from
it). Checkpoints hold the weights (safetensors), the processor, the optimizer state and the step;
`resume` continues from the latest with the same optimizer state.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revseg_agent.errors import InputError
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.names import POLICY_NODES
from revseg_agent.io import atomic_write_text
from revseg_agent.pipeline import trace_from_state
from revseg_agent.policies.base import Policy, SamplingParams
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.registry import load_tracker
from revseg_agent.traces import StepRecord, Trace
from revseg_agent.training.recipe import Recipe, deepspeed_config
from revseg_agent.training.replay import ReplayPlan, plan_replay, run_plan
from revseg_agent.training.rewards import RewardFunc, compute_rewards
from revseg_agent.training.rollouts import run_group
from revseg_agent.training.store import TraceRecord, TraceStore, rescore
from revseg_agent.video import FrameCache

logger = logging.getLogger(__name__)

#: `policy: tiny-random` in a recipe builds a tiny random-init Qwen2.5-VL (offline CPU runs).
TINY_RANDOM = "tiny-random"


@dataclass
class TrainingSample:
    sample_id: str
    video_path: str
    query: str
    gt_masks: np.ndarray
    gt_objects: list[np.ndarray]


def group_advantages(rewards: Sequence[float], eps: float = 1e-4) -> list[float]:
    """(r - mean) / (std + eps) within a group; all-equal rewards give zeros (a documented rule)."""
    r = np.asarray(rewards, dtype=np.float64)
    if len(r) == 0 or np.allclose(r, r[0]):
        return [0.0] * len(r)
    return ((r - r.mean()) / (r.std() + eps)).tolist()


def grpo_token_terms(
    new: torch.Tensor,
    old: torch.Tensor,
    advantage: float,
    *,
    clip_epsilon: float,
    ref: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss and per-token KL for one completion.

    loss_t = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A) + beta * KL_t, with
    ratio_t = exp(new_t - old_t) and KL_t = exp(ref_t - new_t) - (ref_t - new_t) - 1 (k3).
    """
    ratio = torch.exp(new - old)
    clipped = torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
    loss = -torch.minimum(ratio * advantage, clipped * advantage)
    kl = torch.zeros_like(new)
    if ref is not None:
        delta = ref - new
        kl = torch.exp(delta) - delta - 1
        loss = loss + beta * kl
    return loss, kl


class GRPOTrainer:
    """Trains a Qwen2.5-VL policy on the ReVSeg chain from a `Recipe`."""

    def __init__(
        self,
        recipe: Recipe,
        samples: Sequence[TrainingSample],
        *,
        output_dir: str | Path | None = None,
        extra_rewards: dict[str, RewardFunc] | None = None,
    ) -> None:
        """`extra_rewards` are added to the recipe's rewards with weight 1 (TRL signature)."""
        self.recipe = recipe
        self.samples = list(samples)
        if not self.samples:
            raise ValueError("no training samples")
        self.out = Path(output_dir or recipe.output_dir)
        self.extra_rewards = extra_rewards or {}
        # Data parallel: under `accelerate launch` / `torchrun` each process takes its own samples
        # and gradients are averaged across processes before every optimizer step.
        from accelerate import PartialState

        self.dist = PartialState(cpu=recipe.device == "cpu")
        self.step = 0
        self.policy: QwenVLPolicy | None = None
        self.reference: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        #: The DeepSpeed engine when the recipe names a DeepSpeed config (it owns backward/step).
        self.engine: Any = None

    # -- set-up and checkpoints ----------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted(self.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        return next((c for c in reversed(ckpts) if (c / "trainer_state.json").is_file()), None)

    def setup(self, *, resume: bool = False) -> None:
        """Load the policy (from the latest checkpoint when resuming), wrap it with LoRA when the
        recipe asks, and set the KL reference: always the starting policy (for LoRA, the base
        model with the adapters disabled, so no second copy of the weights)."""
        r = self.recipe
        ckpt = self.latest_checkpoint() if resume else None
        base = r.policy
        if base == TINY_RANDOM:
            from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl

            base = str(self.out / "tiny-random-policy")
            with self.dist.main_process_first():
                if not (Path(base) / "config.json").is_file():
                    build_tiny_qwen2_5_vl(base, seed=r.seed)
        full_checkpoint = ckpt is not None and r.lora is None
        device = r.device or str(self.dist.device)
        self.policy = QwenVLPolicy.from_pretrained(
            str(ckpt) if full_checkpoint else base, device=device, dtype=r.dtype
        )
        model = self.policy.model
        if r.lora is not None:
            from peft import LoraConfig, PeftModel, get_peft_model

            if ckpt is not None:  # a LoRA checkpoint holds the adapters; the base is the recipe's
                model = PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
            else:
                config = LoraConfig(
                    r=r.lora.r,
                    lora_alpha=r.lora.alpha,
                    lora_dropout=r.lora.dropout,
                    target_modules=r.lora.target_modules,
                )
                torch.manual_seed(r.seed)  # adapters start the same in every run of a recipe
                model = get_peft_model(model, config)
            self.policy.model = model
        if r.gradient_checkpointing:
            # non-reentrant checkpointing also works when only LoRA adapters need gradients
            kwargs = {"use_reentrant": False}
            enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x name
            if enable is not None:
                enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if r.beta > 0 and r.lora is None:
            initial = (
                QwenVLPolicy.from_pretrained(base, device=device, dtype=r.dtype).model if ckpt else model
            )
            self.reference = copy.deepcopy(initial).eval()
            for p in self.reference.parameters():
                p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=r.learning_rate,
            weight_decay=r.weight_decay,
        )
        if r.deepspeed is not None:
            self.engine = self._deepspeed_engine(model)
        if ckpt is not None:
            if self.engine is not None:
                self.engine.load_checkpoint(str(ckpt), tag=DEEPSPEED_TAG, load_module_strict=r.lora is None)
            else:
                state = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True)
                self.optimizer.load_state_dict(state)
            self.step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
            logger.info("resumed from %s at step %d", ckpt, self.step)

    def _deepspeed_engine(self, model: Any) -> Any:
        """Wrap the model and optimizer in a DeepSpeed engine from the recipe's config.

        The trainer calls backward once per rollout and marks the last one of each step as the
        gradient accumulation boundary itself (rollouts differ in count and length), so the
        config's own accumulation is 1 and losses arrive already scaled."""
        try:
            import deepspeed
        except ImportError as exc:
            raise InputError(
                "the recipe asks for DeepSpeed, which is not installed: "
                "DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed"
            ) from exc

        r = self.recipe
        assert r.deepspeed is not None and self.optimizer is not None
        config = deepspeed_config(r.deepspeed, self.dist.num_processes, r.dtype)
        engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=self.optimizer, config=config)
        self.optimizer = optimizer
        return engine

    def save_checkpoint(self) -> Path:
        """Write `checkpoint-<step>` atomically (a partial folder renamed when complete).

        Called by every process under DeepSpeed (each writes its optimizer shard), else by the
        main process only."""
        assert self.policy is not None and self.optimizer is not None
        final = self.out / f"checkpoint-{self.step}"
        tmp = self.out / f".checkpoint-{self.step}.partial"
        main = self.dist.is_main_process
        if main:
            tmp.mkdir(parents=True, exist_ok=True)
        if self.engine is not None:
            self.dist.wait_for_everyone()
            self.engine.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG)
            self.dist.wait_for_everyone()
        if main:
            self.policy.model.save_pretrained(tmp, safe_serialization=True)
            self.policy.processor.save_pretrained(tmp)
            if self.engine is None:
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "trainer_state.json").write_text(
                json.dumps({"step": self.step, "recipe": self.recipe.model_dump()})
            )
            if final.exists():
                import shutil

                shutil.rmtree(final)
            tmp.rename(final)
        if self.engine is not None:
            self.dist.wait_for_everyone()
        return final

    # -- one step ---------------------------------------------------------------------------------
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

    def rollouts(self, sample: TrainingSample, step: int) -> list[Trace]:
        assert self.policy is not None
        self.policy.model.eval()
        seed = self.recipe.seed + 100_003 * step + 7_919 * self.dist.process_index + hash_id(sample.sample_id)
        contexts = [self._context(seed + 101 * g, self.policy) for g in range(self.recipe.group_size)]
        # The group runs concurrently; its policy calls are batched (see rollouts.run_group).
        states = run_group(build_graph(), {"video_path": sample.video_path, "query": sample.query}, contexts)
        return [trace_from_state(state, context) for state, context in zip(states, contexts, strict=True)]

    def _rewards(self, traces: list[Trace], sample: TrainingSample) -> list[dict[str, float | None]]:
        config = self.recipe.rewards
        rows = compute_rewards(
            traces,
            config,
            gt_masks=[sample.gt_masks] * len(traces),
            gt_objects=[sample.gt_objects] * len(traces),
        )
        for name, func in self.extra_rewards.items():
            values = func(traces, gt_masks=[sample.gt_masks] * len(traces))
            for row, value in zip(rows, values, strict=True):
                row[name] = value
                if value is not None:
                    if math.isnan(value):
                        raise ValueError(f"reward {name!r} is NaN")
                    row["total"] = (row["total"] or 0.0) + value
        return rows

    def _collect(self, batch: list[TrainingSample], store: TraceStore | None) -> list[Group]:
        """Rollouts, rewards and advantages for each sample of a micro-batch (and store them)."""
        assert self.policy is not None
        groups = []
        for sample in batch:
            traces = self.rollouts(sample, self.step)
            rewards = self._rewards(traces, sample)
            advantages = group_advantages([row["total"] or 0.0 for row in rewards])
            groups.append(Group(traces, rewards, advantages))
            if store is None:
                continue
            gt_path = store.save_ground_truth(sample.sample_id, sample.gt_masks, sample.gt_objects)
            for i, (trace, row) in enumerate(zip(traces, rewards, strict=True)):
                store.append(
                    TraceRecord(
                        sample_id=sample.sample_id,
                        group_id=f"{self.step}:{sample.sample_id}",
                        index=i,
                        step=self.step,
                        policy=self.policy.name,
                        ground_truth=gt_path,
                        trace=trace,
                        rewards=row,
                    )
                )
        return groups

    @torch.no_grad()
    def _reference_logprobs(self, plan: ReplayPlan) -> list[torch.Tensor]:
        assert self.policy is not None
        temperature = self.recipe.temperature
        if self.reference is not None:
            return run_plan(_as_policy(self.policy, self.reference), plan, temperature)
        with self.policy.model.disable_adapter():  # LoRA: the base model is the reference
            return run_plan(self.policy, plan, temperature)

    def _backward(
        self, groups: list[Group], scale: float, *, last_micro_batch: bool = True
    ) -> tuple[float, float, int]:
        """Accumulate the gradient of the micro-batch's loss (token mean, times `scale`)."""
        assert self.policy is not None
        r = self.recipe
        tokens = sum(len(s.completion_ids) for g in groups for t in g.traces for s in _policy_steps(t))
        work = [
            (trace, advantage)
            for group in groups
            for trace, advantage in zip(group.traces, group.advantages, strict=True)
            if _policy_steps(trace)
        ]
        todo = [(t, a, 1.0) for t, a in work if a != 0.0 or r.beta != 0]  # others add exactly zero
        if self.engine is not None:
            todo = self._same_backward_count(todo, work)
        loss_sum = kl_sum = 0.0
        frames = FrameCache()
        for k, (trace, advantage, weight) in enumerate(todo):
            steps = _policy_steps(trace)
            # One forward pass scores both rounds when round 2 holds round 1 verbatim; the inputs
            # are built once for the policy and the reference, from frames decoded once a batch.
            plan = plan_replay(self.policy, steps, frames_cache=frames)
            news = run_plan(self.policy, plan, r.temperature)
            refs = self._reference_logprobs(plan) if r.beta > 0 else [None] * len(steps)
            loss = torch.zeros((), device=news[0].device)
            for step, new, ref in zip(steps, news, refs, strict=True):
                old = torch.tensor(step.logprobs, dtype=new.dtype, device=new.device)
                loss_t, kl_t = grpo_token_terms(
                    new, old, advantage, clip_epsilon=r.clip_epsilon, ref=ref, beta=r.beta
                )
                loss = loss + loss_t.sum() * weight * scale / max(tokens, 1)
                kl_sum += float(kl_t.detach().sum()) * weight
            if self.engine is not None:
                self.engine.set_gradient_accumulation_boundary(last_micro_batch and k == len(todo) - 1)
                self.engine.backward(loss, scale_wrt_gas=False)
            else:
                loss.backward()
            loss_sum += float(loss.detach())
        return loss_sum, kl_sum, tokens

    def _same_backward_count(
        self, todo: list[tuple[Trace, float, float]], work: list[tuple[Trace, float]]
    ) -> list[tuple[Trace, float, float]]:
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
            if not work:
                raise RuntimeError("no rollout on this rank wrote tokens to replay; DeepSpeed needs one")
            trace, advantage = work[0]
            todo = todo + [(trace, advantage, 0.0)] * (count - len(todo))
        return todo

    def stored_groups(self) -> list[Group]:
        """The warm-start traces as groups, with rewards (re)computed and advantages."""
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
            rewards = [dict(m.rewards) for m in members]
            advantages = group_advantages([float(row.get("total") or 0.0) for row in rewards])
            groups.append(Group([m.trace for m in members], rewards, advantages))
        if not groups:
            raise ValueError(f"no traces in {path}")
        return groups

    def _optimizer_step(
        self, groups: list[Group], started: float, tokens: int, loss: float, kl: float
    ) -> dict[str, float]:
        assert self.optimizer is not None
        if self.engine is not None:
            self.engine.step()  # reduces the sharded gradients, steps and zeroes them
        else:
            self._average_gradients()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics: dict[str, float] = {"step": float(self.step)}
        names = sorted({k for g in groups for row in g.rewards for k in row})
        for name in names:
            values = [float(v) for g in groups for row in g.rewards if (v := row.get(name)) is not None]
            metrics[f"reward_{name}"] = float(np.mean(values)) if values else float("nan")
        rollouts = [t for g in groups for t in g.traces]
        metrics["loss"] = loss
        metrics["kl"] = kl / max(tokens, 1)
        metrics["completion_tokens"] = tokens / max(len(rollouts), 1)
        metrics["turns"] = float(np.mean([len(_policy_steps(t)) for t in rollouts]))
        metrics["seconds"] = time.time() - started
        return self._average_metrics(metrics)

    def _trackers(self) -> list[Any]:
        trackers: list[Any] = []
        if "tensorboard" in self.recipe.report_to:
            from accelerate.tracking import TensorBoardTracker

            tracker = TensorBoardTracker("grpo", self.out / "tensorboard")
            tracker.start()
            trackers.append(tracker)
        return trackers

    def _average_gradients(self) -> None:
        if self.dist.num_processes == 1:
            return
        assert self.policy is not None
        for p in self.policy.model.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:  # this process's rollouts did not reach it: contribute zeros
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad /= self.dist.num_processes

    def _average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        if self.dist.num_processes == 1:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.dist.device)
        torch.distributed.all_reduce(values)
        averaged = dict(zip(keys, (values / self.dist.num_processes).tolist(), strict=True))
        averaged["step"] = metrics["step"]
        return averaged

    def warm_start_step(self, groups: list[Group]) -> dict[str, float]:
        """One optimizer step on stored groups (off-policy)."""
        assert self.policy is not None
        started = time.time()
        r = self.recipe
        first = (self.step * self.dist.num_processes + self.dist.process_index) * r.prompts_per_step
        batch = [groups[(first + i) % len(groups)] for i in range(r.prompts_per_step)]
        self.policy.model.train()
        loss, kl, tokens = self._backward(batch, 1.0)
        self.policy.model.eval()
        metrics = self._optimizer_step(batch, started, tokens, loss, kl)
        metrics["off_policy"] = 1.0
        return metrics

    def train_step(self, store: TraceStore | None = None) -> dict[str, float]:
        """One optimizer step over `gradient_accumulation_steps` micro-batches of
        `prompts_per_step` samples, each sample with `group_size` rollouts."""
        assert self.policy is not None and self.optimizer is not None
        r = self.recipe
        started = time.time()
        accumulation = max(r.gradient_accumulation_steps, 1)
        all_groups: list[Group] = []
        loss_sum = kl_sum = 0.0
        tokens = 0
        for micro in range(accumulation):
            index = (self.step * accumulation + micro) * self.dist.num_processes + self.dist.process_index
            first = index * r.prompts_per_step
            batch = [self.samples[(first + i) % len(self.samples)] for i in range(r.prompts_per_step)]
            groups = self._collect(batch, store)
            self.policy.model.train()
            loss, kl, n = self._backward(
                groups, 1.0 / accumulation, last_micro_batch=micro == accumulation - 1
            )
            self.policy.model.eval()
            all_groups += groups
            loss_sum, kl_sum, tokens = loss_sum + loss, kl_sum + kl, tokens + n
        return self._optimizer_step(all_groups, started, tokens, loss_sum, kl_sum)

    def train(
        self,
        *,
        max_steps: int | None = None,
        resume: bool = False,
        on_step: Callable[[dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        self.out.mkdir(parents=True, exist_ok=True)
        if not resume and self.step == 0 and self.latest_checkpoint() is not None:
            # a later --resume would pick up the earlier run's checkpoints: refuse to mix runs
            raise InputError(
                f"{self.out} holds checkpoints of an earlier run: pass --resume to continue it, "
                "or choose another output folder"
            )
        if self.policy is None:
            self.setup(resume=resume)
        limit = max_steps if max_steps is not None else self.recipe.max_steps
        main = self.dist.is_main_process
        rank = self.dist.process_index
        store = TraceStore(self.out / ("traces.jsonl" if main else f"traces-rank{rank}.jsonl"))
        warm_traces = self.recipe.warm_start.traces if self.recipe.warm_start else None
        if warm_traces is not None and Path(warm_traces).resolve() == store.path.resolve():
            raise InputError(
                f"the warm-start traces {warm_traces} are this run's own trace store, which the run "
                "rewrites: copy them to another file first"
            )
        # A resumed run repeats the steps after its checkpoint (a fresh one starts over): their
        # rollouts and metric rows from the earlier attempt go, so nothing is counted twice.
        dropped = store.keep_steps_before(self.step)
        if main:
            dropped_rows = _keep_csv_steps_up_to(self.out / "metrics.csv", self.step)
            if dropped or dropped_rows:
                logger.info(
                    "dropped %d rollouts and %d metric rows after step %d", dropped, dropped_rows, self.step
                )
        trackers = self._trackers() if main else []
        history = []
        warm = self.recipe.warm_start
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
                assert self.optimizer is not None
                self.optimizer.zero_grad(set_to_none=True)
                # (under DeepSpeed with several processes a checkpoint needs every rank, which a
                # failure on one rank cannot promise: the last periodic checkpoint stands)
                alone = self.engine is None or self.dist.num_processes == 1
                if self.step > 0 and main and alone:
                    logger.error("training stopped at step %d; saving a checkpoint first", self.step)
                    self.save_checkpoint()
                raise
            history.append(metrics)
            if main:
                _append_csv(self.out / "metrics.csv", metrics)
                for tracker in trackers:
                    tracker.log({k: v for k, v in metrics.items() if k != "step"}, step=self.step)
                if on_step is not None:
                    on_step(metrics)
            if (self.step % self.recipe.save_every == 0 or self.step == limit) and (
                main or self.engine is not None
            ):
                self.save_checkpoint()
        for tracker in trackers:
            tracker.finish()
        if main:
            atomic_write_text(self.out / "recipe.json", self.recipe.model_dump_json(indent=2))
            plot_metrics(self.out / "metrics.csv", self.out / "metrics.png")
        self.dist.wait_for_everyone()
        return history


DEEPSPEED_TAG = "deepspeed"


@dataclass
class Group:
    """The G rollouts of one sample (or one stored group) with their rewards and advantages."""

    traces: list[Trace]
    rewards: list[dict[str, float | None]]
    advantages: list[float]


def _policy_steps(trace: Trace) -> list[StepRecord]:
    """The policy calls of a rollout that wrote tokens (round 1 and round 2 attempts)."""
    return [s for s in trace.steps if s.node in POLICY_NODES and s.completion_ids]


def _as_policy(policy: QwenVLPolicy, model: Any) -> QwenVLPolicy:
    """The same processor with another model (the frozen reference)."""
    return QwenVLPolicy(model, policy.processor, name=f"{policy.name} (reference)")


def hash_id(value: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "little")


def _append_csv(path: Path, row: dict[str, float]) -> None:
    new = not path.is_file()
    if not new:
        with path.open(encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        if header != list(row):
            # a new column appeared (a reward that was absent so far): rewrite with the union
            rows = list(csv.DictReader(path.open(encoding="utf-8")))
            fields = list(dict.fromkeys([*header, *row]))
            rows.append({k: str(v) for k, v in row.items()})
            import io

            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(path, buf.getvalue())
            return
    with path.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _keep_csv_steps_up_to(path: Path, step: int) -> int:
    """Drop metric rows after `step` (atomic rewrite); returns how many were dropped."""
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    kept = [r for r in rows if float(r["step"]) <= step]
    if len(kept) != len(rows):
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(path, buf.getvalue())
    return len(rows) - len(kept)


def plot_metrics(csv_path: Path, png_path: Path) -> Path | None:
    """Reward curves, loss and KL per step as one PNG (for people; the CSV is the record)."""
    if not csv_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    steps = [float(r["step"]) for r in rows]
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in rows[0]:
        if key.startswith("reward_"):
            ax_r.plot(steps, [float(r[key] or "nan") for r in rows], label=key[7:])
    ax_r.set_xlabel("step")
    ax_r.set_title("mean reward")
    ax_r.legend(fontsize=8)
    ax_l.plot(steps, [float(r["loss"]) for r in rows], label="loss")
    ax_l.plot(steps, [float(r["kl"]) for r in rows], label="KL")
    ax_l.set_xlabel("step")
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
