"""Peak memory and time to the first GRPO step, ~10 vs ~100 expressions of a 480p MeViS-layout set.

Before issue 25 every expression's ground truth was decoded before step 1, so memory grew with the
number of expressions (4.47 GB at 60 expressions vs 1.67 GB at 10, measured by the issue); now
samples hold references and a group's masks are decoded when it is rewarded. Each size runs
`revseg train grpo` (tiny random policy, one step, the weight-free tracker) in its own process;
prints peak RSS (the child's `ru_maxrss`) and seconds to the end of step 1, side by side, and
the ratio (the issue asks for <= 1.15).

Usage: python benchmarks/training_memory.py [--videos 2 20] [--expressions-per-video 5]
       [--frames 100] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from revseg_agent.masks_io import encode_rle

SIZE = (480, 854)  # (height, width)


def write_set(root: Path, videos: int, per_video: int, frames: int, seed: int = 0) -> int:
    """`videos` clips of `frames` 480p frames, three moving shapes each, `per_video` expressions
    per clip (each one shape or two), MeViS layout; returns the number of expressions."""
    h, w = SIZE
    rng = np.random.default_rng(seed)
    meta: dict[str, dict[str, object]] = {}
    mask_dict: dict[str, list[object]] = {}
    names = [f"{k:05d}" for k in range(frames)]
    for v in range(videos):
        video = f"vid{v:03d}"
        folder = root / "JPEGImages" / video
        folder.mkdir(parents=True)
        floor = cv2.resize(rng.integers(40, 90, (h // 16, w // 16, 3)).astype(np.uint8), (w, h))
        starts = rng.integers(40, 300, size=(3, 2))
        speeds = rng.integers(-3, 4, size=(3, 2))
        colours = [(30, 30, 230), (230, 80, 40), (40, 200, 40)]
        masks = np.zeros((3, frames, h, w), bool)
        for k in range(frames):
            frame = floor.copy()
            for o in range(3):
                y, x = np.clip(starts[o] + speeds[o] * k, 0, [h - 60, w - 60])
                masks[o, k, y : y + 60, x : x + 60] = True
                frame[masks[o, k]] = colours[o]
            cv2.imwrite(str(folder / f"{names[k]}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        for o in range(3):
            mask_dict[f"{video}-{o}"] = [encode_rle(m) for m in masks[o]]
        expressions = {}
        for e in range(per_video):
            targets = [f"{video}-{e % 3}"] + ([f"{video}-{(e + 1) % 3}"] if e >= 3 else [])
            expressions[str(e)] = {
                "exp": f"shape {e}",
                "obj_id": list(range(len(targets))),
                "anno_id": targets,
            }
        meta[video] = {"frames": names, "expressions": expressions}
    (root / "meta_expressions.json").write_text(json.dumps({"videos": meta}))
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    return videos * per_video


RECIPE = """policy: tiny-random
data: {{kind: benchmark, dataset: mevis, root: {root}}}
group_size: 2
prompts_per_step: 1
max_new_tokens: 8
num_frames: 4
max_steps: 1
save_every: 100
device: cpu
tracker: classical
report_to: []
rewards: {{weights: {{format: 1.0, temporal: 1.0, spatial: 1.0, mask: 0.0}}}}
"""


def first_step(root: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `revseg train grpo` to the end of its first step."""
    recipe = out.with_suffix(".yaml")
    recipe.write_text(RECIPE.format(root=root))
    cmd = [sys.executable, "-m", "revseg_agent", "train", "grpo", "--config", str(recipe)]
    cmd += ["--output-dir", str(out)]
    # a wrapper process per run: its children's peak is this run's alone
    wrapper = (
        "import json, resource, subprocess, sys, time; t = time.time(); "
        f"p = subprocess.run({cmd!r}, capture_output=True, text=True); "
        "print(json.dumps({'rc': p.returncode, 'err': p.stderr[-3000:], 's': time.time() - t, "
        "'kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(result["err"])
    return result["kb"] / 1024, result["s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs=2, default=[2, 20])
    parser.add_argument("--expressions-per-video", type=int, default=5)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="revseg-train-memory-"))
    rows = []
    for videos in sorted(args.videos):
        root = work / f"set-{videos}"
        count = write_set(root, videos, args.expressions_per_video, args.frames)
        peak, seconds = first_step(root, work / f"run-{videos}")
        rows.append((count, peak, seconds))
    print(f"{'expressions':>11} {'peak RSS (MB)':>14} {'seconds to step 1':>18}")
    for count, peak, seconds in rows:
        print(f"{count:>11} {peak:>14.0f} {seconds:>18.1f}")
    (small, small_peak, small_s), (large, large_peak, large_s) = rows
    memory, time_ratio = large_peak / small_peak, large_s / small_s
    print(f"ratio {large}/{small} expressions: memory {memory:.2f}x, time {time_ratio:.2f}x")


if __name__ == "__main__":
    main()
