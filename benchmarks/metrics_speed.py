"""J and F speed: this library vs the reference (`vos-benchmark`, the DAVIS toolkit's code).

Side by side in one run on 854x480 masks: DAVIS ground truth vs OSVOS predictions from
../shared/data (or generated blobs when it is absent). Prints ms per frame for both, the ratio,
and the largest difference in J and F (the goal: identical numbers, at least 10x faster).
Usage: python benchmarks/metrics_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from revseg_agent.eval.metrics import score_frames

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def reference(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from vos_benchmark.evaluator import Evaluator

    js, fs = [], []
    for p, g in zip(pred, gt, strict=True):
        ev = Evaluator()
        ev.objects_in_gt.add(1)
        ev.feed_frame(p.astype(np.uint8), g.astype(np.uint8))
        js.append(ev.object_iou[1][0])
        fs.append(ev.boundary_f[1][0])
    return np.array(js, float), np.array(fs, float)


def pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    davis = SHARED / "davis2016-subset" / "Annotations"
    if davis.is_dir():
        out = {}
        for seq in sorted(p.name for p in davis.iterdir()):
            gt = np.stack(
                [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted((davis / seq).glob("*.png"))]
            )
            pred = np.stack(
                [
                    np.array(Image.open(p)) > 0
                    for p in sorted((SHARED / "osvos-predictions" / seq).glob("*.png"))
                ]
            )
            out[seq] = (pred, gt)
        return out
    rng = np.random.default_rng(0)
    gt = np.zeros((40, 480, 854), bool)
    for i in range(40):
        cv2.ellipse(gt[i].view(np.uint8), (300 + 5 * i, 240), (120, 80), 0, 0, 360, 1, -1)
    pred = np.roll(gt, 4, axis=2) ^ (rng.random(gt.shape) > 0.999)
    return {"generated": (pred, gt)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    header = ("sequence", "frames", "ours ms/f", "ref ms/f", "speed-up", "max |dJ|", "max |dF|")
    print("{:<12} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9}".format(*header))
    total_ours = total_ref = 0.0
    frames = 0
    for name, (pred, gt) in pairs().items():
        n = len(gt)
        best_ours = best_ref = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = score_frames(pred, gt)
            best_ours = min(best_ours, time.perf_counter() - start)
            start = time.perf_counter()
            ref_j, ref_f = reference(pred, gt)
            best_ref = min(best_ref, time.perf_counter() - start)
        dj = float(np.abs(ours.j - ref_j).max())
        df = float(np.abs(ours.f - ref_f).max())
        print(
            f"{name:<12} {n:>6} {1000 * best_ours / n:>10.2f} {1000 * best_ref / n:>9.2f} "
            f"{best_ref / best_ours:>8.1f}x {dj:>9.1e} {df:>9.1e}"
        )
        total_ours += best_ours
        total_ref += best_ref
        frames += n
    print(
        f"{'all':<12} {frames:>6} {1000 * total_ours / frames:>10.2f} {1000 * total_ref / frames:>9.2f} "
        f"{total_ref / total_ours:>8.1f}x"
    )


if __name__ == "__main__":
    main()
