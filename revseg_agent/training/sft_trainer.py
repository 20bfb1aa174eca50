"""The supervised run (`revseg train sft`): the losses of `training.sft` with the same machinery
as GRPO's: the policy made trainable by `model_setup` (LoRA, gradient checkpointing), the
optimizer, data-parallel averaging and DeepSpeed by `optimization`, prompts in TRL's seeded order
(`sampler`), and `checkpoint-<step>` folders a rerun resumes from.

Steps: the first `grounding_steps` are the curriculum's grounding stage (round 2 alone on random
frames where the target is visible, `grounding_batch_size` a step per process, a
`grounding_lookalikes` share of them lookalike stills instead); the rest train
both rounds of the chain on `prompts_per_step` expressions a step per process, with every
`grounding_every`-th of them a grounding step again (rehearsal). The trained policy
is written to `<output_dir>/policy` at the end, LoRA adapters merged, to load as `--policy`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from revseg_agent.io import atomic_write_text
from revseg_agent.synth.scenes import render_still
from revseg_agent.training.data import TrainingSample
from revseg_agent.training.frozen_vision import FrozenVision
from revseg_agent.training.metrics_log import append_csv, keep_csv_steps_up_to
from revseg_agent.training.model_setup import load_trainable_policy
from revseg_agent.training.optimization import Optimization
from revseg_agent.training.query_noise import with_stray_word
from revseg_agent.training.recipe import SFTRecipe
from revseg_agent.training.sft import chain_losses, keyframe_box_losses, save_policy
from revseg_agent.training.trainer_base import TrainerBase
from revseg_agent.types import Box
from revseg_agent.video import open_video

logger = logging.getLogger(__name__)

METRICS_FILE = "sft_metrics.csv"
POLICY_FOLDER = "policy"
#: Tags the query-noise generator apart from the grounding items' (same seed, step, process).
NOISE_STREAM = 1


def lookalike_item(seed: int, distractors: int) -> tuple[np.ndarray, str, list[Box]]:
    """A grounding item that only the whole name answers: a still whose `distractors` each share
    the target's shape or colour (`render_still(lookalikes=True)`), with its name and box."""
    still = render_still(seed, distractors=distractors, lookalikes=True)
    box = Box.from_mask(still.mask)
    assert box is not None  # a drawn shape always has pixels
    return still.frame, still.name, [box]


class SFTTrainer(TrainerBase):
    """Trains a Qwen2.5-VL policy on the ideal chain's answers from an `SFTRecipe`.

    The constructor loads the policy (with `resume`, from the latest checkpoint), its LoRA
    adapters and the optimizer or DeepSpeed engine; `train` runs the steps. Use it as a context
    manager (or `close` it) so a distributed run ends cleanly."""

    command = "train-sft"

    def __init__(
        self,
        recipe: SFTRecipe,
        samples: Sequence[TrainingSample],
        *,
        output_dir: str | Path | None = None,
        resume: bool = False,
    ) -> None:
        super().__init__(recipe, samples, output_dir=output_dir, resume=resume)
        self.recipe = recipe
        self.policy = load_trainable_policy(recipe, self.base_policy, self.resume_from, self.device)
        self.vision = FrozenVision(self.policy.model) if recipe.freeze_vision else None
        self.optimization = Optimization(self.policy.model, recipe, self.dist)
        self._resume_optimization()

    # -- steps ---------------------------------------------------------------------------------
    def grounding_items(self, step: int) -> list[tuple[np.ndarray, str, list[Box]]]:
        """`grounding_batch_size` frames where a target is visible, with its label and boxes; drawn
        by a generator of (seed, step, process), so a resumed run draws what the uninterrupted
        one would."""
        r = self.recipe
        rng = np.random.default_rng([r.seed, step, self.dist.process_index])
        items: list[tuple[np.ndarray, str, list[Box]]] = []
        while len(items) < r.grounding_batch_size:
            if r.grounding_lookalikes > 0 and rng.random() < r.grounding_lookalikes:
                items.append(lookalike_item(int(rng.integers(2**31)), int(rng.integers(1, 4))))
                continue
            sample = self.samples[int(rng.integers(len(self.samples)))]
            masks, objects = sample.truth()
            index = int(rng.integers(len(masks)))
            boxes = [b for b in (Box.from_mask(o[index]) for o in objects) if b is not None]
            if boxes:  # else no target is visible on that frame
                frame = open_video(sample.video_path).frame(index)
                items.append((frame, sample.description or sample.query, boxes))
        return items

    def is_grounding_step(self, step: int) -> bool:
        """The grounding stage, then every `grounding_every`-th step of the chain stage."""
        r = self.recipe
        if step < r.grounding_steps:
            return True
        return (
            r.grounding_every > 0 and (step - r.grounding_steps) % r.grounding_every == r.grounding_every - 1
        )

    def _in_forwards(self, count: int) -> list[slice]:
        """`count` examples in forwards of `per_device_train_batch_size` (the same number of
        backward passes on every process, as DeepSpeed needs)."""
        size = self.recipe.per_device_train_batch_size
        return [slice(k, min(k + size, count)) for k in range(0, count, size)]

    def _grounding_losses(self, step: int) -> list[tuple[float, float]]:
        """Round 2 alone on this step's grounding frames, backwarded forward by forward."""
        items = self.grounding_items(step)
        parts = self._in_forwards(len(items))
        losses: list[tuple[float, float]] = []
        for k, part in enumerate(parts):
            loss = keyframe_box_losses(
                self.policy, items[part], model=self.optimization.forward_model, vision=self.vision
            )
            self.optimization.backward(loss.sum() / len(items), last=k == len(parts) - 1)
            losses += [(0.0, float(x)) for x in loss.detach()]
        return losses

    def chain_batch(self, step: int) -> list[TrainingSample]:
        """This process's `prompts_per_step` expressions of chain step `step`, a `query_noise`
        share of them asked with a stray word in the query (`TrainingSample.asked`), drawn by a
        generator of (seed, step, process) so a resumed run trains on what the uninterrupted one
        would."""
        r = self.recipe
        chain_step = step - r.grounding_steps
        first = (chain_step * self.dist.num_processes + self.dist.process_index) * r.prompts_per_step
        batch = [self.samples[self.sampler.index(first + i)] for i in range(r.prompts_per_step)]
        if r.query_noise == 0:
            return batch
        rng = np.random.default_rng([r.seed, step, self.dist.process_index, NOISE_STREAM])
        return [
            dataclasses.replace(s, asked=with_stray_word(s.query, rng)) if rng.random() < r.query_noise else s
            for s in batch
        ]

    def _chain_losses(self, step: int) -> list[tuple[float, float]]:
        """Both rounds on this process's `prompts_per_step` expressions of the step."""
        r = self.recipe
        batch = self.chain_batch(step)
        parts = self._in_forwards(len(batch))
        losses: list[tuple[float, float]] = []
        for k, part in enumerate(parts):
            loss1, loss2 = chain_losses(
                self.policy,
                batch[part],
                r.num_frames,
                model=self.optimization.forward_model,
                inventory=r.think_inventory,
                keyframe_ties=r.keyframe_ties,
                vision=self.vision,
            )
            self.optimization.backward((loss1 + loss2).sum() / len(batch), last=k == len(parts) - 1)
            losses += [(float(a), float(b)) for a, b in zip(loss1.detach(), loss2.detach(), strict=True)]
        return losses

    def train_step(self) -> dict[str, float]:
        started = time.time()
        grounding = self.is_grounding_step(self.step)
        self.policy.model.train()
        losses = self._grounding_losses(self.step) if grounding else self._chain_losses(self.step)
        self.policy.model.eval()
        grad_norm, learning_rate = self.optimization.step(self.step)
        self.step += 1
        metrics = {
            "step": float(self.step),
            "stage": 1.0 if grounding else 2.0,
            "loss_round1": float(np.mean([a for a, _ in losses])),
            "loss_round2": float(np.mean([b for _, b in losses])),
            "learning_rate": learning_rate,
            "grad_norm": grad_norm,
            "seconds": time.time() - started,
        }
        return self.optimization.average_metrics(metrics)

    # -- the run -------------------------------------------------------------------------------
    def train(
        self, *, max_steps: int | None = None, on_step: Callable[[dict[str, float]], None] | None = None
    ) -> list[dict[str, float]]:
        """Steps up to `max_steps` (the recipe's by default), a checkpoint every `save_every`
        and at the end, then the policy (LoRA merged) in `<output_dir>/policy`."""
        limit = max_steps if max_steps is not None else self.recipe.max_steps
        main = self.dist.is_main_process
        metrics_csv = self.out / METRICS_FILE
        if main:
            keep_csv_steps_up_to(metrics_csv, self.step)  # a resumed run repeats the later steps
        history = []
        while self.step < limit:
            try:
                metrics = self.train_step()
            except BaseException:
                self.optimization.zero_grad()
                if self.step > 0 and self.optimization.can_save_after_failure():
                    logger.error("training stopped at step %d; saving a checkpoint first", self.step)
                    self.save_checkpoint()
                raise
            history.append(metrics)
            if main:
                append_csv(metrics_csv, metrics)
                if on_step is not None:
                    on_step(metrics)
            due = self.step % self.recipe.save_every == 0 or self.step == limit
            if due and self.optimization.saves_checkpoints():
                self.save_checkpoint()
        if main:
            atomic_write_text(self.out / "recipe.json", self.recipe.model_dump_json(indent=2))
            save_policy(self.policy, self.out / POLICY_FOLDER, self.recipe.max_new_tokens)
        self.dist.wait_for_everyone()
        return history

    def save_checkpoint(self) -> Path:
        """`checkpoint-<step>` (`Optimization.save_checkpoint`): the weights (the adapters alone
        under LoRA), the processor, the optimizer state and the step."""
        return self.optimization.save_checkpoint(self.out, self.step, self.policy)
