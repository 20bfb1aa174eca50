"""Run by `torchrun --nproc_per_node 2` from test_grpo_trainer.py: a 2-process CPU data-parallel GRPO run.

Each rank writes the sum of its parameters after training; data-parallel training must leave
every rank with the same weights although each rank rolled out different samples. A third
`--deepspeed CONFIG` trains through a DeepSpeed engine (ZeRO-2 on the CPU, gloo backend)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch.distributed

from revseg_agent.training.data import load_samples
from revseg_agent.training.recipe import GeneratedData, Recipe
from revseg_agent.training.rewards import RewardConfig
from revseg_agent.training.trainer import GRPOTrainer

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("policy")
    parser.add_argument("out", type=Path)
    parser.add_argument("--deepspeed")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--uneven", action="store_true", help="rank 1's rewards are all equal (no signal)")
    args = parser.parse_args()
    policy, out, deepspeed = args.policy, args.out, args.deepspeed
    recipe = Recipe(
        # a constant learning rate: the runs compared end at different max_steps (2 then resumed
        # to 3, vs 3 straight), and a decaying schedule is defined over max_steps
        lr_scheduler_type="constant",
        policy=policy,
        output_dir=str(out),
        data=GeneratedData(num_samples=4, num_frames=6),
        group_size=2,
        prompts_per_step=1,
        learning_rate=1e-2,
        beta=0.0,
        max_new_tokens=6,
        num_frames=4,
        max_steps=args.max_steps,
        save_every=100,
        device="cpu",
        rewards=RewardConfig(weights={"format": 0.0 if args.uneven else 1.0}, reward_fallbacks=True),
        deepspeed=deepspeed,
        max_grad_norm=None,  # plain and DeepSpeed runs are compared unclipped
    )

    rank = int(os.environ.get("RANK", "0"))

    def token_share(completions, **_):  # type: ignore[no-untyped-def]
        if args.uneven and rank == 1:  # zero advantages: this rank has nothing to backward
            return [0.0 for _ in completions]
        return [sum(i < 256 for s in t.steps for i in s.completion_ids) / 12 for t in completions]

    forwards = {"engine": 0}
    if deepspeed is not None:  # count the loss forwards that go through the DeepSpeed engine
        import deepspeed as ds

        engine_forward = ds.DeepSpeedEngine.forward

        def counted(self, *a, **kw):  # type: ignore[no-untyped-def]
            forwards["engine"] += 1
            return engine_forward(self, *a, **kw)

        ds.DeepSpeedEngine.forward = counted  # type: ignore[method-assign]

    trainer = GRPOTrainer(
        recipe,
        load_samples(recipe.data, out / "data"),
        extra_rewards={"low": token_share},
        resume=args.resume,
    )
    trainer.train()
    assert trainer.policy is not None
    total = float(sum(p.detach().double().sum() for p in trainer.policy.model.parameters()))
    rank = trainer.dist.process_index
    trainer.close()  # as the CLI does: the process group goes before the interpreter does
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "param_sum": total,
                "world": trainer.dist.num_processes,
                "step": trainer.step,
                "engine_forwards": forwards["engine"],
                "group_destroyed": not torch.distributed.is_initialized(),
            }
        )
    )
