"""Evaluation throughput: a video's expressions together vs each expression alone, side by side.

`revseg eval` runs the expressions of a video together (frames decoded once, each round one
batched policy call, one SAM2 pass in which the image encoder runs once per frame for every
expression); `--per-expression` runs each alone. Both run here on the same generated MeViS-layout
set (480p, several expressions per video), with a tiny policy and a random-weight SAM2.1 Hiera-T at
each input size asked for (`--hiera l`: the Hiera-L `revseg` loads by default), in one process one
after the other. Prints expressions per second, the speed-up, whether the two runs' records and
prediction files are equal, and the share of time in SAM2's image encoder: the work a group
shares. The rest of a frame (memory attention over the object's own memories, decoders) is per
expression in SAM2 itself (`propagate_in_video` runs each object alone, batch 1), so the speed-up
is bounded by that share (Amdahl).

Usage: python benchmarks/eval_throughput.py [--videos 2] [--expressions-per-video 8]
       [--frames 16] [--sizes 1024 512] [--policy revseg-tiny] [--hiera t] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from training_memory import write_set  # the same generated 480p MeViS-layout set

from revseg_agent.eval.datasets import open_benchmark
from revseg_agent.eval.runner import EvalRunner
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.registry import load_policy
from revseg_agent.tools.sam2_tracker import SAM2Tracker

SAM2_CONFIGS = {
    "t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "l": "configs/sam2.1/sam2.1_hiera_l.yaml",  # what `revseg` loads by default
}


def random_sam2(folder: Path, config: str, image_size: int) -> SAM2Tracker:
    """A random-init SAM2.1 (a released config) at `image_size`, through the loader."""
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    model = build_sam2_video_predictor(
        config, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={image_size}"]
    )
    path = folder / f"{Path(config).stem}_random_{image_size}.pt"
    torch.save({"model": model.state_dict()}, path)
    return SAM2Tracker.from_checkpoint(path, config, device="cpu", image_size=image_size)


class EncoderClock:
    """Seconds spent in SAM2's image encoder (`forward_image`), the work a group shares; the rest
    of a frame (memory attention over the object's own memories, the mask decoder, the memory
    encoder) is per expression in either path."""

    def __init__(self, tracker: SAM2Tracker) -> None:
        self.seconds = 0.0
        forward = tracker.predictor.forward_image

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return forward(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        tracker.predictor.forward_image = timed  # type: ignore[method-assign]


def run(
    root: Path, out: Path, context: Context, clock: EncoderClock, *, per_expression: bool
) -> tuple[float, float, dict[str, Any]]:
    """(seconds, of which in SAM2's image encoder, summary)."""
    runner = EvalRunner(open_benchmark("mevis", root), out, context=context, per_expression=per_expression)
    encoder = clock.seconds
    started = time.perf_counter()
    summary = runner.run(progress=False)
    return time.perf_counter() - started, clock.seconds - encoder, summary


def same_outputs(a: Path, b: Path, summary_a: dict[str, Any], summary_b: dict[str, Any]) -> tuple[bool, bool]:
    """(records equal but for seconds, every prediction PNG byte-equal)."""

    def records(summary: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in summary["expressions"]]

    pngs_a = sorted((a / "predictions").rglob("*.png"))
    pngs_b = sorted((b / "predictions").rglob("*.png"))
    same_files = [p.relative_to(a) for p in pngs_a] == [p.relative_to(b) for p in pngs_b] and all(
        x.read_bytes() == y.read_bytes() for x, y in zip(pngs_a, pngs_b, strict=True)
    )
    return records(summary_a) == records(summary_b), same_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--expressions-per-video", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--policy", default="revseg-tiny")
    parser.add_argument("--hiera", choices=sorted(SAM2_CONFIGS), default="t", help="SAM2.1 Hiera-T or -L")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="revseg-eval-throughput-"))
    root = work / "set"
    count = write_set(root, args.videos, args.expressions_per_video, args.frames)
    policy = load_policy(args.policy)
    rows = []
    for size in args.sizes:
        tracker = random_sam2(work, SAM2_CONFIGS[args.hiera], size)
        clock = EncoderClock(tracker)
        context = Context(policy=policy, tracker=tracker, on_parse_failure="fallback")
        alone_s, alone_enc, alone = run(root, work / f"alone-{size}", context, clock, per_expression=True)
        together_s, together_enc, together = run(
            root, work / f"together-{size}", context, clock, per_expression=False
        )
        records, files = same_outputs(work / f"alone-{size}", work / f"together-{size}", alone, together)
        rows.append(
            {
                "sam2_input": size,
                "expressions": count,
                "per_expression_expr_per_s": count / alone_s,
                "grouped_expr_per_s": count / together_s,
                "speedup": alone_s / together_s,
                "per_expression_encoder_share": alone_enc / alone_s,
                "grouped_encoder_share": together_enc / together_s,
                "records_equal": records,
                "predictions_equal": files,
            }
        )
    print(
        f"{args.videos} videos x {args.expressions_per_video} expressions, {args.frames} frames at 480p, "
        f"policy {args.policy}, SAM2.1 Hiera-{args.hiera.upper()} (random weights), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'SAM2 input':>10} {'alone expr/s':>13} {'grouped expr/s':>15} {'speed-up':>9} "
        f"{'records equal':>14} {'PNGs equal':>11} {'encoder share alone/grouped':>28}"
    )
    for r in rows:
        print(
            f"{r['sam2_input']:>10} {r['per_expression_expr_per_s']:>13.3f} {r['grouped_expr_per_s']:>15.3f} "
            f"{r['speedup']:>8.2f}x {r['records_equal']!s:>14} {r['predictions_equal']!s:>11} "
            f"{r['per_expression_encoder_share']:>19.0%} / {r['grouped_encoder_share']:.0%}"
        )
    (work / "eval_throughput.json").write_text(json.dumps(rows, indent=2))
    print(f"results: {work / 'eval_throughput.json'}")


if __name__ == "__main__":
    main()
