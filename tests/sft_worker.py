"""Run by `torchrun --nproc_per_node 2` from test_sft_trainer.py: a 2-process CPU SFT run, plain
data parallel or (`--deepspeed CONFIG`) through a DeepSpeed ZeRO-2 engine (gloo backend).

Each rank writes the sum of its parameters before and after training, the expressions it
trained on and how many forwards went through the DeepSpeed engine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch.distributed

from revseg_agent.training.data import load_samples
from revseg_agent.training.recipe import GeneratedData, SFTRecipe
from revseg_agent.training.sft_trainer import SFTTrainer

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("policy")
    parser.add_argument("out", type=Path)
    parser.add_argument("--deepspeed")
    args = parser.parse_args()
    recipe = SFTRecipe(
        policy=args.policy,
        output_dir=str(args.out),
        data=GeneratedData(num_samples=4, num_frames=6),
        grounding_steps=1,
        grounding_batch_size=2,
        prompts_per_step=1,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        max_new_tokens=80,
        num_frames=4,
        max_steps=2,
        save_every=2,
        device="cpu",
        deepspeed=args.deepspeed,
        max_grad_norm=None,  # plain and DeepSpeed runs are compared unclipped
    )
    forwards = {"engine": 0}
    if args.deepspeed is not None:  # count the loss forwards that go through the DeepSpeed engine
        import deepspeed as ds

        engine_forward = ds.DeepSpeedEngine.forward

        def counted(self, *a, **kw):  # type: ignore[no-untyped-def]
            forwards["engine"] += 1
            return engine_forward(self, *a, **kw)

        ds.DeepSpeedEngine.forward = counted  # type: ignore[method-assign]

    trainer = SFTTrainer(recipe, load_samples(recipe.data, args.out / "data"))

    def total() -> float:
        return float(sum(p.detach().double().sum() for p in trainer.policy.model.parameters()))

    start = total()
    seen: list[str] = []
    for _ in range(recipe.max_steps):
        first = (
            (trainer.step - recipe.grounding_steps) * trainer.dist.num_processes + trainer.dist.process_index
        ) * recipe.prompts_per_step
        if trainer.step >= recipe.grounding_steps:
            seen.append(trainer.samples[trainer.sampler.index(first)].sample_id)
        trainer.train_step()
    trainer.save_checkpoint()
    rank = trainer.dist.process_index
    trainer.close()  # as the CLI does: the process group goes before the interpreter does
    (args.out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "param_sum": total(),
                "start_sum": start,
                "step": trainer.step,
                "samples": seen,
                "engine_forwards": forwards["engine"],
                "group_destroyed": not torch.distributed.is_initialized(),
            }
        )
    )
