"""What GRPO's and SFT's trainers set up the same way: the samples, the output folder, the prompt
order, the processes (accelerate's `PartialState`), the checkpoint to resume, the memory check and
the starting policy; and the end of a distributed run.

Why `close`: a process that exits with a gloo process group still alive can abort in Gloo's
worker threads while the interpreter is torn down ("terminate called without an active
exception", SIGABRT; pytorch/pytorch#179291), which fails a `torchrun` job that has finished its
work. A trainer used as a context manager (or closed) destroys the group it created.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from revseg_agent.io import claim_output_dir
from revseg_agent.training import checkpoint as ckpt_io
from revseg_agent.training.data import TrainingSample
from revseg_agent.training.recipe import TrainingSettings, materialise_policy
from revseg_agent.training.sampler import PromptSampler

if TYPE_CHECKING:
    from accelerate import PartialState

    from revseg_agent.training.optimization import Optimization

logger = logging.getLogger(__name__)


class TrainerBase:
    """The common set-up of a training run; subclasses load their models after `__init__`."""

    #: The command whose outputs the output folder holds (`io.claim_output_dir`).
    command: str = "train"
    #: The optimizer or DeepSpeed engine, set by the subclass once its model is loaded.
    optimization: Optimization

    def __init__(
        self,
        recipe: TrainingSettings,
        samples: Sequence[TrainingSample],
        *,
        output_dir: str | Path | None = None,
        resume: bool = False,
    ) -> None:
        import torch.distributed
        from accelerate import PartialState

        self.samples = list(samples)
        if not self.samples:
            raise ValueError("no training samples")
        self.out = claim_output_dir(output_dir or recipe.output_dir, self.command, option="output_dir")
        #: Which prompt each position of the run takes (TRL's semantics: see `sampler`).
        self.sampler = PromptSampler(len(self.samples), seed=recipe.seed, shuffle=recipe.shuffle_dataset)
        # Data parallel: under `accelerate launch` / `torchrun` each process takes its own samples
        # and gradients are averaged across processes before every optimizer step.
        had_group = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.dist: PartialState = PartialState(cpu=recipe.device == "cpu")
        #: Whether this trainer started the process group (then `close` destroys it).
        self._owns_group = not had_group and torch.distributed.is_initialized()
        self.device = recipe.device or str(self.dist.device)
        self.step = 0
        #: The checkpoint this run resumes from (`resume` and one exists), else None.
        self.resume_from = ckpt_io.checkpoint_to_resume(self.out, resume)
        from revseg_agent.training.plan import check_device_memory

        plan = check_device_memory(recipe, device=self.device, num_processes=self.dist.num_processes)
        if plan is not None:
            logger.info("%s", plan.table())
        with self.dist.main_process_first():
            #: The starting policy's folder (a hub id or a local folder; generated for `tiny`).
            self.base_policy = materialise_policy(recipe.policy, self.out, recipe.seed)

    def _resume_optimization(self) -> None:
        """The optimizer state and step of `resume_from` (after the subclass set `optimization`)."""
        if self.resume_from is not None:
            self.optimization.restore(self.resume_from)
            self.step = ckpt_io.checkpoint_step(self.resume_from)
            logger.info("resumed from %s at step %d", self.resume_from, self.step)

    def latest_checkpoint(self) -> Path | None:
        return ckpt_io.latest_checkpoint(self.out)

    def close(self, *, finished: bool = True) -> None:
        """Destroys the process group this trainer started (every process calls it at the end).

        After a finished run the processes first meet at a barrier, so none tears its group down
        while another still exchanges with it (a rank that left early aborted in CI). After an
        error nothing waits (another rank may be dead: a barrier would hang) and the group is
        left to the exit, as torchtitan does (pytorch/torchtitan#1342)."""
        import torch.distributed

        if self._owns_group and torch.distributed.is_initialized() and finished:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        self._owns_group = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(finished=kind is None)
