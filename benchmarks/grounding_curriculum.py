"""Can revseg-tiny learn to box a *described* shape among others? A grounding curriculum, measured.

Round 2 alone (the keyframe and "Detect the red circle ..."), trained from the random-init
revseg-tiny architecture (224 x 224 keyframe) through the SFT losses the trainer uses
(`training.sft.keyframe_box_losses`, `--batch` stills in one forward), stage by stage: each stage
draws stills with a range of distractor shapes of other (colour, shape) pairs
(`synth.scenes.render_still`), at its own learning rate with warm-up and cosine decay. Every
`--eval-every` steps it answers greedily on held-out stills of the stage and on frames of the
synthetic world's valid split (the frame where a single-target expression's target is largest,
its description as the label) and prints box IoU (mean, median, share over 0.5), side by side
with the centre box on the same world frames. The state (weights, optimizer, step) is saved at
every evaluation, so `--resume` continues a run killed or stopped for time.

Usage: python benchmarks/grounding_curriculum.py --work runs/curriculum \
           [--stage 0:0:3000:1e-3 --stage 1:3:6000:5e-4] [--batch 16] [--eval-every 500] [--resume]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revseg_agent.eval.grounding import GroundingItem, answer_ious, centre_ious, grounding_items, summary
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.synth.scenes import render_still
from revseg_agent.training.optim import build_optimizer, clip_gradients
from revseg_agent.training.sft import keyframe_box_losses
from revseg_agent.types import Box

Item = tuple[np.ndarray, str, Box]
HELD_OUT_SEED = 10**7
TRAIN_SEED = 10**9


def parse_stage(text: str) -> tuple[int, int, int, float]:
    lo, hi, steps, lr = text.split(":")
    return int(lo), int(hi), int(steps), float(lr)


def world_frames(work: Path, count: int, *, split: str = "valid", all_frames: bool = False) -> list[Item]:
    """Grounding items of the world's `split` (`revseg synth --seed 0`: 300 train / 40 valid
    videos, written under `work/world` on first use), as (frame, description, box) tuples."""
    from revseg_agent.synth import WorldSpec, write_world

    world = work / "world"
    if not (world / "world.json").is_file():
        write_world(world, WorldSpec(seed=0, train=300, valid=40, test=0))
    return [(i.frame, i.label, i.box) for i in grounding_items(world / split, count, all_frames=all_frames)]


def ious_of(policy: QwenVLPolicy, items: list[Item]) -> np.ndarray:
    return answer_ious(policy, [GroundingItem(f, label, box) for f, label, box in items])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--stage", action="append", type=parse_stage, help="lo:hi distractors, steps, lr")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--world-frames", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--rope-theta",
        type=float,
        default=3.0,
        help="the language model's M-RoPE base for a new run (revseg-tiny's: 3)",
    )
    parser.add_argument(
        "--rope-slow",
        type=int,
        default=0,
        help="near-still temporal M-RoPE frequencies for a new run (synth.policy.content_channel_rope)",
    )
    parser.add_argument(
        "--world-mix",
        type=float,
        default=0.0,
        help="share of each batch drawn from frames of the world's train split (stages with distractors)",
    )
    args = parser.parse_args()
    stages = args.stage or [(0, 0, 3000, 1e-3), (1, 3, 6000, 5e-4)]
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    state_dir = args.work / "state"
    if args.resume and (state_dir / "state.json").is_file():
        state: dict[str, Any] = json.loads((state_dir / "state.json").read_text())
        policy = QwenVLPolicy.from_pretrained(str(state_dir), device="cpu", dtype="float32")
    else:
        from revseg_agent.synth.policy import build_revseg_tiny

        folder = build_revseg_tiny(
            args.work / "initial",
            seed=args.seed,
            keyframe_pixels=224 * 224,
            rope_theta=args.rope_theta,
            rope_slow=args.rope_slow,
        )
        policy = QwenVLPolicy.from_pretrained(str(folder), device="cpu", dtype="float32")
        state = {"step": 0}
    world = world_frames(args.work, args.world_frames)
    train_frames = world_frames(args.work, 10**9, split="train", all_frames=True) if args.world_mix else []
    centre = summary(centre_ious([GroundingItem(f, label, box) for f, label, box in world]))
    print(json.dumps({"centre_box_on_world_frames": centre, "world_frames": len(world)}), flush=True)
    total = sum(s[2] for s in stages)
    optimizer = None
    stage_of_optimizer = -1
    started = time.perf_counter()
    while state["step"] < total:
        step = state["step"]
        index, first = 0, 0
        while step >= first + stages[index][2]:
            first += stages[index][2]
            index += 1
        lo, hi, steps, lr = stages[index]
        if optimizer is None or stage_of_optimizer != index:
            optimizer = build_optimizer(
                policy.model.parameters(),
                learning_rate=lr,
                weight_decay=args.weight_decay,
                master_weights=False,
            )
            stage_of_optimizer = index
            saved = state_dir / "optimizer.pt"
            if args.resume and saved.is_file() and state.get("stage") == index:
                optimizer.load_state_dict(torch.load(saved, weights_only=True))
        k = step - first
        warm = min(1.0, (k + 1) / max(1, args.warmup))
        factor = warm * 0.5 * (1 + math.cos(math.pi * min(1.0, k / steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr * max(factor, 0.02)
        rng = np.random.default_rng([args.seed, step])
        items = []
        from_world = round(args.world_mix * args.batch) if hi > 0 and train_frames else 0
        for _ in range(from_world):
            frame, label, box = train_frames[int(rng.integers(len(train_frames)))]
            items.append((frame, label, [box]))
        for _ in range(args.batch - from_world):
            still = render_still(
                TRAIN_SEED + int(rng.integers(10**9)), distractors=int(rng.integers(lo, hi + 1))
            )
            truth = Box.from_mask(still.mask)
            assert truth is not None
            items.append((still.frame, still.name, [truth]))
        policy.model.train()
        loss = keyframe_box_losses(policy, items).mean()
        loss.backward()
        clip_gradients(policy.model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step + 1
        state["stage"] = index
        if state["step"] % args.eval_every == 0 or state["step"] == total:
            held = []
            for j in range(32):
                still = render_still(HELD_OUT_SEED + j, distractors=lo + j % (hi - lo + 1))
                truth = Box.from_mask(still.mask)
                assert truth is not None
                held.append((still.frame, still.name, truth))
            row = {
                "step": state["step"],
                "stage": index,
                "distractors": f"{lo}-{hi}",
                "loss": round(float(loss.detach()), 4),
                "held_out_stills": summary(ious_of(policy, held)),
                "world_frames": summary(ious_of(policy, world)),
                "minutes": round((time.perf_counter() - started) / 60, 1),
            }
            print(json.dumps(row), flush=True)
            with (args.work / "curve.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            policy.model.save_pretrained(state_dir, safe_serialization=True)
            policy.processor.save_pretrained(state_dir)
            torch.save(optimizer.state_dict(), state_dir / "optimizer.pt")
            (state_dir / "state.json").write_text(json.dumps(state))


if __name__ == "__main__":
    main()
