"""Steps per second of `revseg train sft` on the synthetic world, one example per forward vs
several, side by side in one run (revseg-tiny's architecture, random init, 224 x 224 keyframe).

Each setting trains `--steps` grounding steps (`grounding_batch_size` frames a step) and then
`--steps` chain steps (`prompts_per_step` expressions a step) from the same start and prints steps
per second per stage; the ratio is what batching buys.

Usage: python benchmarks/sft_speed.py [--steps 20] [--sizes 1 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def measure(world: Path, work: Path, size: int, steps: int) -> dict[str, float]:
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.recipe import BenchmarkData, SFTRecipe
    from revseg_agent.training.sft_trainer import SFTTrainer

    recipe = SFTRecipe(
        policy="revseg-tiny-random",
        output_dir=str(work / f"run-{size}"),
        data=BenchmarkData(dataset="mevis", root=str(world)),
        grounding_steps=steps,
        grounding_batch_size=16,
        prompts_per_step=8,
        per_device_train_batch_size=size,
        learning_rate=1e-3,
        num_frames=8,
        max_new_tokens=160,
        max_steps=2 * steps,
        device="cpu",
    )
    trainer = SFTTrainer(recipe, load_samples(recipe.data, work / "data"))
    rates = {}
    for stage in ("grounding", "chain"):
        started = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        rates[stage] = steps / (time.perf_counter() - started)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from revseg_agent.synth import WorldSpec, write_world

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_world(work / "world", WorldSpec(seed=0, train=20, valid=0, test=0))
        rows = {size: measure(work / "world" / "train", work, size, args.steps) for size in args.sizes}
    print(f"{'examples per forward':>20} {'grounding steps/s':>18} {'chain steps/s':>14}")
    for size, rates in rows.items():
        print(f"{size:>20} {rates['grounding']:>18.2f} {rates['chain']:>14.2f}")
    first, last = rows[args.sizes[0]], rows[args.sizes[-1]]
    print(
        f"{'ratio':>20} {last['grounding'] / first['grounding']:>17.2f}x "
        f"{last['chain'] / first['chain']:>13.2f}x"
    )


if __name__ == "__main__":
    main()
