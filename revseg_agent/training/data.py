"""Training data: generated clips (offline, exact ground truth) or a benchmark split."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from revseg_agent.eval.datasets import Benchmark, DatasetError, Sample, has_target, open_benchmark
from revseg_agent.io import claim_output_dir
from revseg_agent.synth.queries import inventory
from revseg_agent.training.recipe import BenchmarkData, GeneratedData

#: A sample's ground truth: the union mask stack `(frames, H, W)` and one stack per target object.
GroundTruth = tuple[np.ndarray, list[np.ndarray]]


@dataclass
class TrainingSample:
    """One query with its video and ground truth (the union mask stack and per-object stacks).

    A benchmark's ground truth is not held: `read_truth` decodes it when a group is rewarded and
    it is released after, so memory and start-up time do not grow with the number of expressions
    (ReVOS: 35,074). Generated clips hold theirs (`gt_masks`, `gt_objects`)."""

    sample_id: str
    video_path: str
    query: str
    gt_masks: np.ndarray | None = None
    gt_objects: list[np.ndarray] | None = None
    #: What the query refers to, in words, and why (the synthetic world writes them; supervised
    #: targets use them where present, else the query itself).
    description: str | None = None
    evidence: str | None = None
    #: The video's objects, their sizes and what each does, in words (the synthetic world's
    #: `synth.queries.inventory`); SFT's `think_inventory` puts it in round 1's reasoning.
    inventory: str | None = None
    #: The query in the words round 1's prompt asks it, where training rewords it (SFT's
    #: `query_noise`: a stray word inserted); the targets still restate `query`, so round 1 is
    #: taught to read past the stray word rather than to spell it back.
    asked: str | None = None
    read_truth: Callable[[], GroundTruth] | None = field(default=None, repr=False, compare=False)

    def truth(self) -> GroundTruth:
        """The ground truth, decoded now when the sample does not hold it."""
        if self.read_truth is not None:
            return self.read_truth()
        if self.gt_masks is None:
            raise ValueError(f"{self.sample_id}: a training sample needs ground truth")
        return self.gt_masks, self.gt_objects if self.gt_objects is not None else [self.gt_masks]


CLIP_SIZE = (112, 112)  # (height, width)
SQUARE = 24


def generated_samples(out_dir: str | Path, spec: GeneratedData) -> list[TrainingSample]:
    """Clips of a red square moving across a textured background with a blue distractor.

    The query names the square; ground truth is the square's exact mask on every frame.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    h, w = CLIP_SIZE
    samples = []
    for k in range(spec.num_samples):
        folder = out / f"clip{k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        x0, y0 = rng.integers(0, w - SQUARE), rng.integers(0, h - SQUARE)
        vx, vy = rng.integers(-4, 5, size=2)
        cx, cy = rng.integers(20, w - 20), rng.integers(20, h - 20)
        background = cv2.resize(
            rng.integers(40, 90, (h // 8, w // 8, 3)).astype(np.uint8),
            (w, h),
            interpolation=cv2.INTER_NEAREST,
        )
        masks = np.zeros((spec.num_frames, h, w), bool)
        for i in range(spec.num_frames):
            x = int(np.clip(x0 + vx * i, 0, w - SQUARE))
            y = int(np.clip(y0 + vy * i, 0, h - SQUARE))
            frame = background.copy()
            cv2.circle(frame, (int(cx), int(cy)), 10, (230, 80, 40), -1)  # BGR blue distractor
            frame[y : y + SQUARE, x : x + SQUARE] = (30, 30, 230)  # BGR red square
            masks[i, y : y + SQUARE, x : x + SQUARE] = True
            cv2.imwrite(str(folder / f"{i:05d}.png"), frame)
        samples.append(TrainingSample(f"clip{k:03d}", str(folder), "the red square", masks, [masks]))
    return samples


def _read_truth(bench: Benchmark, sample: Sample) -> GroundTruth:
    gt = bench.ground_truth(sample)
    if gt is None:
        raise DatasetError(f"{sample.key}: its ground truth is gone")
    per_target = getattr(bench, "target_masks", None)
    objects = per_target(sample) if per_target is not None and len(sample.targets) > 1 else [gt]
    return gt, objects


def benchmark_samples(spec: BenchmarkData) -> list[TrainingSample]:
    """Expressions with a target from a benchmark split, each a reference to its ground truth
    (read when rewarded). Annotations are checked for presence here, before training starts,
    without decoding a pixel (`Benchmark.has_target`); expressions without a target are left out."""
    bench = open_benchmark(spec.dataset, spec.root, spec.split)
    out = []
    for sample in bench.samples()[: spec.limit] if spec.limit else bench.samples():
        if not has_target(bench, sample):  # no target: nothing to ground or reward
            continue
        out.append(
            TrainingSample(
                sample.key,
                str(bench.frames_dir(sample)),
                sample.text,
                description=sample.extra.get("description"),
                evidence=sample.extra.get("evidence"),
                inventory=inventory(objects) if (objects := sample.extra.get("objects")) else None,
                read_truth=functools.partial(_read_truth, bench, sample),
            )
        )
    return out


def load_samples(spec: GeneratedData | BenchmarkData, work_dir: str | Path) -> list[TrainingSample]:
    if isinstance(spec, GeneratedData):  # written into a folder of revseg's own, marked as such
        return generated_samples(claim_output_dir(Path(work_dir) / "data", "train-data"), spec)
    return benchmark_samples(spec)
