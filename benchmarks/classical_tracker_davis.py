"""Weight-free tracker on real DAVIS sequences: ground-truth box on the middle frame -> masks.

Prints per-sequence J (region IoU, DAVIS definition) and milliseconds per frame, then the mean.
Runs the default configuration and the plain variant (CSRT box + GrabCut in the box, no mask
prior) side by side.
Usage: python benchmarks/classical_tracker_davis.py [--data ../shared/data/davis2016-subset]
       [--work-size 320] [--iterations 2] [--margin 0.1]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from revseg_agent.tools.classical import ClassicalTracker, ClassicalTrackerConfig
from revseg_agent.types import Box
from revseg_agent.video import open_video


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=here.parent / "shared/data/davis2016-subset")
    parser.add_argument("--work-size", type=int, default=ClassicalTrackerConfig.work_size)
    parser.add_argument("--iterations", type=int, default=ClassicalTrackerConfig.grabcut_iterations)
    parser.add_argument("--margin", type=float, default=ClassicalTrackerConfig.box_margin)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"DAVIS data not found at {args.data}")
    config = ClassicalTrackerConfig(
        work_size=args.work_size, grabcut_iterations=args.iterations, box_margin=args.margin
    )
    variants = {"default": config, "no-prior": replace(config, mask_prior=False)}
    sequences = sorted((args.data / "JPEGImages").iterdir())
    print(f"{'variant':<9} {'sequence':<12} {'frames':>6} {'J':>6} {'ms/frame':>9}")
    for label, variant in variants.items():
        tracker = ClassicalTracker(variant)
        js, mss = [], []
        for seq_dir in sequences:
            video = open_video(seq_dir)
            gt = np.stack(
                [
                    cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127
                    for p in sorted((args.data / "Annotations" / seq_dir.name).glob("*.png"))
                ]
            )
            key = video.num_frames // 2
            box = Box.from_mask(gt[key])
            assert box is not None
            start = time.perf_counter()
            track = tracker.track(video, frame_index=key, boxes=[box])
            ms = 1000 * (time.perf_counter() - start) / video.num_frames
            j = float(np.mean([region_j(p, g) for p, g in zip(track.masks, gt, strict=True)]))
            js.append(j)
            mss.append(ms)
            print(f"{label:<9} {seq_dir.name:<12} {video.num_frames:>6} {j:>6.3f} {ms:>9.1f}")
        print(f"{label:<9} {'mean':<12} {'':>6} {np.mean(js):>6.3f} {np.mean(mss):>9.1f}")


if __name__ == "__main__":
    main()
