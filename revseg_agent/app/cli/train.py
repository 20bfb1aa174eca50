"""`revseg train grpo|sft|plan|rescore`: training from a recipe, its memory plan, rescoring traces."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from revseg_agent.errors import InputError
from revseg_agent.graphs.registry import check_device
from revseg_agent.io import claim_output_dir


def add_commands(sub: Any) -> None:
    """train and its subcommands"""
    train = sub.add_parser("train", help="GRPO on replayed graph traces").add_subparsers(
        dest="train_command", required=True
    )
    grpo = train.add_parser("grpo", help="train the policy with GRPO from a recipe")
    grpo.add_argument("--config", required=True, type=Path, help="recipe YAML (see recipes/)")
    grpo.add_argument("--output-dir", type=Path, help="overrides the recipe's output_dir")
    grpo.add_argument("--max-steps", type=int, help="overrides the recipe's max_steps")
    grpo.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    sft = train.add_parser(
        "sft", help="supervised fine-tuning on the ideal chain's answers from ground truth (an SFT recipe)"
    )
    sft.add_argument(
        "--config", required=True, type=Path, help="SFT recipe YAML (`trainer: sft`, see recipes/)"
    )
    sft.add_argument(
        "--output-dir", type=Path, help="overrides the recipe's output_dir (the policy goes in policy/)"
    )
    sft.add_argument("--max-steps", type=int, help="overrides the recipe's max_steps")
    sft.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    plan = train.add_parser("plan", help="per-GPU memory plan of a recipe; exits 1 when it cannot fit")
    plan.add_argument("--config", required=True, type=Path, help="recipe YAML (GRPO or SFT)")
    plan.add_argument("--num-processes", type=int, default=1, help="GPUs (data-parallel processes)")
    plan.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory of one GPU in GB")
    plan.add_argument(
        "--headroom", type=float, default=0.10, help="share of GPU memory the plan leaves free (default 0.10)"
    )
    rescore = train.add_parser("rescore", help="recompute rewards of stored traces (no model runs)")
    rescore.add_argument("--traces", required=True, type=Path)
    rescore.add_argument("--config", required=True, type=Path, help="recipe YAML whose rewards to apply")
    rescore.add_argument("--out", required=True, type=Path)

    for command in (grpo, sft, plan, rescore):
        command.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from revseg_agent.training.recipe import Recipe, SFTRecipe, load_recipe

    loader = {"sft": SFTRecipe.load, "plan": load_recipe}.get(args.train_command, Recipe.load)
    try:
        recipe = loader(args.config)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"bad recipe {args.config}: {exc}") from exc
    if args.train_command == "plan":
        from revseg_agent.training.plan import plan_memory

        memory = plan_memory(
            recipe, num_processes=args.num_processes, gpu_memory_gb=args.gpu_memory_gb, headroom=args.headroom
        )
        print(memory.table())
        if not memory.fits:
            print(memory.fixes())
            return 1
        return 0
    assert isinstance(recipe, Recipe | SFTRecipe)
    if args.train_command == "rescore":
        from revseg_agent.training.store import TraceStore, rescore, write_records

        assert isinstance(recipe, Recipe)
        if not args.traces.is_file():
            raise InputError(f"traces not found: {args.traces}")
        records = rescore(list(TraceStore(args.traces)), recipe.rewards)
        write_records(args.out, records)
        totals = [r.rewards.get("total") or 0.0 for r in records]
        mean = sum(totals) / max(len(totals), 1)
        print(f"rescored {len(records)} traces; mean total reward {mean:.4f} -> {args.out}")
        return 0
    from revseg_agent.training.data import load_samples

    check_device(recipe.device, option="the recipe's device")
    if args.output_dir:
        recipe = recipe.model_copy(update={"output_dir": str(args.output_dir)})
    out = claim_output_dir(recipe.output_dir, f"train-{args.train_command}", option="--output-dir")
    samples = load_samples(recipe.data, out)
    if not samples:
        raise InputError(f"no training samples with a target in {recipe.data}")
    trainer: Any
    if isinstance(recipe, SFTRecipe):
        from revseg_agent.training.sft_trainer import SFTTrainer

        trainer = SFTTrainer(recipe, samples, output_dir=out, resume=args.resume)
    else:
        from revseg_agent.training.trainer import GRPOTrainer

        trainer = GRPOTrainer(recipe, samples, output_dir=out, resume=args.resume)

    from tqdm import tqdm

    limit = args.max_steps if args.max_steps is not None else recipe.max_steps
    bars: list[Any] = []

    def show(metrics: dict[str, float]) -> None:
        if not bars:  # the first step after set-up (which may have resumed from a checkpoint)
            bars.append(
                tqdm(total=limit, initial=int(metrics["step"]) - 1, desc=args.train_command, unit="step")
            )
        if "loss_round1" in metrics:
            bars[0].set_postfix_str(
                f"round 1 {metrics['loss_round1']:.3f} round 2 {metrics['loss_round2']:.3f}"
            )
        else:
            rewards = " ".join(f"{k[7:]}={v:.3f}" for k, v in metrics.items() if k.startswith("reward_"))
            bars[0].set_postfix_str(f"{rewards} loss={metrics['loss']:.4f} kl={metrics['kl']:.5f}")
        bars[0].update(1)

    finished = False
    try:
        trainer.train(max_steps=args.max_steps, on_step=show)
        finished = True
    finally:
        for bar in bars:
            bar.close()
        # a torchrun job ends with its process group destroyed (`TrainerBase.close`)
        trainer.close(finished=finished)
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    if isinstance(recipe, SFTRecipe):
        from revseg_agent.training.sft_trainer import METRICS_FILE, POLICY_FOLDER

        print(f"policy saved to {out / POLICY_FOLDER} (use it as --policy or a recipe's policy)")
        print(f"losses per step: {out / METRICS_FILE}  checkpoints: {checkpoints}")
    else:
        print(f"metrics: {out / 'metrics.csv'}  checkpoints: {checkpoints}")
    return 0
