"""The optimizer side of a training run, shared by GRPO and SFT: AdamW (fp32 masters for
half-precision weights), gradients averaged over data-parallel processes, clipping, the learning
rate of each step, or all of that handed to a DeepSpeed engine (ZeRO-1/2) when the settings name
a config; and the optimizer's part of a checkpoint.

The trainers run backward once per sample (prompts differ in length) and mark the last one of a
step themselves, so a DeepSpeed config's own accumulation is 1 and losses arrive already scaled.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from revseg_agent.errors import InputError
from revseg_agent.training import checkpoint as ckpt_io
from revseg_agent.training.loss import learning_rate_factor
from revseg_agent.training.optim import build_optimizer, clip_gradients
from revseg_agent.training.recipe import deepspeed_config

if TYPE_CHECKING:
    from accelerate import PartialState

    from revseg_agent.policies.qwen import QwenVLPolicy
    from revseg_agent.training.recipe import TrainingSettings

logger = logging.getLogger(__name__)


class Optimization:
    """Backward passes and optimizer steps for `model` under `settings` on the processes of `dist`."""

    def __init__(self, model: torch.nn.Module, settings: TrainingSettings, dist: PartialState) -> None:
        self.model = model
        self.settings = settings
        self.dist = dist
        self.optimizer: torch.optim.Optimizer = build_optimizer(
            model.parameters(),
            learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay,
            master_weights=settings.deepspeed is None,  # DeepSpeed's bf16 mode keeps fp32 masters itself
        )
        #: The DeepSpeed engine when the settings name a config (it owns backward and step).
        self.engine: Any = self._deepspeed_engine() if settings.deepspeed is not None else None

    def _deepspeed_engine(self) -> Any:
        try:
            import deepspeed
        except ImportError as exc:
            raise InputError(
                "the recipe asks for DeepSpeed, which is not installed: "
                "DS_BUILD_OPS=0 pip install --no-build-isolation deepspeed"
            ) from exc

        s = self.settings
        assert s.deepspeed is not None
        config = deepspeed_config(s.deepspeed, self.dist.num_processes, s.dtype, s.max_grad_norm)
        engine, optimizer, _, _ = deepspeed.initialize(
            model=self.model, optimizer=self.optimizer, config=config
        )
        self.optimizer = optimizer
        return engine

    @property
    def forward_model(self) -> Any:
        """What runs a training forward: the DeepSpeed engine (its forward hooks) or None (the
        model itself)."""
        return self.engine

    def learning_rate(self, step: int) -> float:
        """The learning rate of the optimizer step after `step` steps (`lr_scheduler_type`,
        `warmup_ratio` over `max_steps`): a function of the step, so a resumed run continues it."""
        s = self.settings
        return s.learning_rate * learning_rate_factor(s.lr_scheduler_type, step, s.max_steps, s.warmup_ratio)

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        """Accumulate `loss`'s gradients; `last`: the step's final backward (DeepSpeed reduces
        its sharded gradients there)."""
        if self.engine is not None:
            self.engine.set_gradient_accumulation_boundary(last)
            self.engine.backward(loss, scale_wrt_gas=False)
        else:
            loss.backward()

    def step(self, step: int) -> tuple[float, float]:
        """Average gradients over processes, clip them to `max_grad_norm`, take one optimizer
        step at step `step`'s learning rate, zero them. Returns (gradient norm before clipping,
        learning rate); DeepSpeed clips and reports the norm itself."""
        learning_rate = self.learning_rate(step)
        optimizer = self.engine.optimizer if self.engine is not None else self.optimizer
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        if self.engine is not None:
            self.engine.step()  # reduces the sharded gradients, clips, steps and zeroes them
            norm = self.engine.get_global_grad_norm()
            return (float(norm) if norm is not None else float("nan")), learning_rate
        self._average_gradients()
        norm = clip_gradients(self.model.parameters(), self.settings.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, learning_rate

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _average_gradients(self) -> None:
        if self.dist.num_processes == 1:
            return
        from accelerate.utils import reduce

        for p in self.model.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:  # this process's samples did not reach it: contribute zeros
                p.grad = torch.zeros_like(p)
            p.grad = reduce(p.grad, "mean")

    def average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Each metric's mean over processes (the step number as it is)."""
        if self.dist.num_processes == 1:
            return metrics
        from accelerate.utils import reduce

        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.dist.device)
        averaged = dict(zip(keys, reduce(values, "mean").tolist(), strict=True))
        averaged["step"] = metrics["step"]
        return averaged

    # -- checkpoints ---------------------------------------------------------------------------
    def saves_checkpoints(self) -> bool:
        """Whether this process takes part in writing checkpoints: the main one, and under
        DeepSpeed every one (each writes its optimizer shard)."""
        return self.dist.is_main_process or self.engine is not None

    def save_checkpoint(self, out: Path, step: int, policy: QwenVLPolicy) -> Path:
        """Write `out/checkpoint-<step>` atomically (a partial folder renamed when complete): the
        weights (the adapters alone under LoRA) and processor, the optimizer state or each
        process's DeepSpeed shard, the step and the settings; then keep the newest
        `save_total_limit`. Called by the processes `saves_checkpoints` names."""
        partial = ckpt_io.partial_folder(out, step)
        main = self.dist.is_main_process
        if main:
            partial.mkdir(parents=True, exist_ok=True)
        self.save_shards(partial)
        final = out / f"checkpoint-{step}"
        if main:
            ckpt_io.write_policy_files(
                partial,
                model=policy.model,
                processor=policy.processor,
                step=step,
                recipe=self.settings.model_dump(),
                optimizer_state=self.state_for_checkpoint(),
                frame_timing=policy.frame_timing,  # trained with it: later runs feed it too
            )
            final = ckpt_io.publish(partial, out, step)
            if self.settings.save_total_limit is not None:
                ckpt_io.rotate_checkpoints(out, keep=self.settings.save_total_limit)
        if self.engine is not None:
            self.dist.wait_for_everyone()
        return final

    def can_save_after_failure(self) -> bool:
        """Whether a failed step may still save the last completed one: not under DeepSpeed with
        several processes, where a checkpoint needs every rank (the last periodic one stands)."""
        return self.dist.is_main_process and (self.engine is None or self.dist.num_processes == 1)

    def state_for_checkpoint(self) -> dict[str, Any] | None:
        """The optimizer state the main process writes (None under DeepSpeed: each rank writes
        its own shard with `save_shards`)."""
        return self.optimizer.state_dict() if self.engine is None else None

    def save_shards(self, folder: Path) -> None:
        """Under DeepSpeed, every process writes its optimizer shard into `folder` (collective)."""
        if self.engine is None:
            return
        self.dist.wait_for_everyone()
        self.engine.save_checkpoint(str(folder), tag=ckpt_io.DEEPSPEED_TAG)
        self.dist.wait_for_everyone()

    def restore(self, checkpoint: Path) -> None:
        if self.engine is not None:
            self.engine.load_checkpoint(
                str(checkpoint), tag=ckpt_io.DEEPSPEED_TAG, load_module_strict=self.settings.lora is None
            )
        else:
            self.optimizer.load_state_dict(ckpt_io.load_optimizer_state(checkpoint))
