"""Steps per second of `revseg train sft` on the synthetic world, one example per forward vs
several, side by side in one run (revseg-tiny's architecture, random init, 224 x 224 keyframe).

Each setting trains `--steps` grounding steps (`grounding_batch_size` frames a step) and then
`--steps` chain steps (`prompts_per_step` expressions a step) from the same start and prints steps
per second per stage; the ratio is what batching buys. `--freeze-vision` measures every size a
second time with the recipe's `freeze_vision` (the language model alone on cached visual tokens):
the split has `--videos` videos, so the cache is cold for the first pass over them and warm
after, as in a run of several epochs.

Usage: python benchmarks/sft_speed.py [--steps 20] [--sizes 1 16] [--threads 1]
           [--freeze-vision] [--video-pixels 50176] [--videos 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def measure(
    world: Path, work: Path, size: int, steps: int, *, frozen: bool = False, video_pixels: int | None = None
) -> dict[str, float]:
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.recipe import BenchmarkData, SFTRecipe
    from revseg_agent.training.sft_trainer import SFTTrainer

    recipe = SFTRecipe(
        policy="revseg-tiny-random",
        output_dir=str(work / f"run-{size}-{frozen}"),
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
        freeze_vision=frozen,
        video_pixels=video_pixels,
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
    parser.add_argument("--freeze-vision", action="store_true", help="also measure each size frozen")
    parser.add_argument("--video-pixels", type=int, default=None, help="round 1's frame budget")
    parser.add_argument("--videos", type=int, default=20, help="videos in the train split")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from revseg_agent.synth import WorldSpec, write_world

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_world(work / "world", WorldSpec(seed=0, train=args.videos, valid=0, test=0))
        settings = [
            (size, frozen) for size in args.sizes for frozen in (False, True)[: 1 + args.freeze_vision]
        ]
        rows = {
            (size, frozen): measure(
                work / "world" / "train",
                work,
                size,
                args.steps,
                frozen=frozen,
                video_pixels=args.video_pixels,
            )
            for size, frozen in settings
        }
    print(f"{'examples per forward':>20} {'vision':>7} {'grounding steps/s':>18} {'chain steps/s':>14}")
    for (size, frozen), rates in rows.items():
        tower = "frozen" if frozen else "trained"
        print(f"{size:>20} {tower:>7} {rates['grounding']:>18.2f} {rates['chain']:>14.2f}")
    pairs = [("batching", rows[(args.sizes[0], False)], rows[(args.sizes[-1], False)])]
    if args.freeze_vision:
        pairs.append(("frozen", rows[(args.sizes[-1], False)], rows[(args.sizes[-1], True)]))
    for name, first, last in pairs:
        print(
            f"{name + ' ratio':>20} {'':>7} {last['grounding'] / first['grounding']:>17.2f}x "
            f"{last['chain'] / first['chain']:>13.2f}x"
        )


if __name__ == "__main__":
    main()
