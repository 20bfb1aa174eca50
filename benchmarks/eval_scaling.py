"""Expressions per second: single process vs a local Ray cluster with 1 and 2 workers.

The same evaluation (the graph with the shipped revseg-tiny policy and the weight-free tracker,
on the test split of a small generated world) runs three times into fresh folders, side by
side in one run: in this process, on Ray with 1 worker, on Ray with 2 workers (each worker
its own policy and tracker, one CPU thread each). Prints wall time (Ray's start-up included)
and expressions per second, and checks the three result files agree.

Usage: python benchmarks/eval_scaling.py [--videos 8] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from revseg_agent.eval.distributed import RayExecutor, RayOptions
from revseg_agent.eval.spec import EvalSpec
from revseg_agent.synth.dataset import WorldSpec, write_world


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=8, help="test videos in the generated world")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="revseg-eval-scaling-"))
    root = work / "world"
    if not root.exists():
        write_world(root, WorldSpec(seed=11, train=1, valid=1, test=args.videos))
    torch.set_num_threads(1)  # as each Ray worker does: the comparison is per worker

    def spec(name: str) -> EvalSpec:
        return EvalSpec(
            dataset="mevis",
            root=root / "test",
            out=work / name,
            policy="revseg-tiny",
            tracker="classical",
            num_frames=8,
            on_parse_failure="fallback",
            device="cpu",
        )

    rows = []
    for name, workers in (("single process", 0), ("ray, 1 worker", 1), ("ray, 2 workers", 2)):
        run_spec = spec(name.replace(" ", "-").replace(",", ""))
        started = time.perf_counter()
        if workers == 0:
            summary = run_spec.build_runner().run(progress=False)
        else:
            executor = RayExecutor(run_spec, RayOptions(workers=workers))
            summary = run_spec.build_runner(load=False).run(progress=False, executor=executor)
        seconds = time.perf_counter() - started
        n = len(summary["expressions"])
        rows.append((name, n, seconds, summary["J&F"]))
    print(f"{'executor':<16} {'expressions':>11} {'seconds':>8} {'expr/s':>7} {'J&F':>6}")
    for name, n, seconds, jf in rows:
        print(f"{name:<16} {n:>11} {seconds:>8.1f} {n / seconds:>7.2f} {jf:>6.1f}")
    print(f"2 workers vs 1: {rows[1][2] / rows[2][2]:.2f}x the throughput")
    same = len({json.dumps(r[3]) for r in rows}) == 1
    print(f"same J&F in all three: {same}")


if __name__ == "__main__":
    main()
