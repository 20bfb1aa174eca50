"""Does the chain learn? The synthetic world's test split through the same tracker, side by side:

    centre box | random keyframe + true box | policies (e.g. SFT, SFT + GRPO) | oracle

J&F, round-1 and round-2 parse rates, keyframe area ratio (the temporal reward's quantity) and
keyframe box IoU (the spatial reward's) per row. Usage:

    python benchmarks/synthetic_world.py --world runs/world --policy sft=runs/sft/policy \\
        --policy grpo=runs/grpo/checkpoint-100 [--limit 300] [--frames 8]

`--policy revseg-tiny` names the shipped checkpoint. Writes `OUT/<row>/` (each a resumable
`revseg eval` folder) and `OUT/table.md`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from revseg_agent.eval.datasets import open_benchmark
from revseg_agent.eval.runner import EvalRunner
from revseg_agent.eval.world_record import write_world_record
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.registry import load_policy, load_tracker, policy_source
from revseg_agent.policies.base import SamplingParams

BASELINES = (("centre box", "centre-box"), ("random keyframe + true box", "random-keyframe"))


def row(name: str, summary: dict[str, object]) -> list[str]:
    d = summary["diagnostics"]
    assert isinstance(d, dict)

    def pct(v: object) -> str:
        return "-" if v is None else f"{100 * float(v):.1f}"  # type: ignore[arg-type]

    def num(v: object) -> str:
        return "-" if v is None else f"{float(v):.3f}"  # type: ignore[arg-type]

    return [
        name,
        f"{float(summary['J&F']):.1f}",  # type: ignore[arg-type]
        pct(d["round1_parse_rate"]),
        pct(d["round2_parse_rate"]),
        num(d["mean_keyframe_area_ratio"]),
        num(d["mean_box_iou"]),
        num(d.get("median_box_iou")),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", required=True, type=Path, help="a `revseg synth` folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--policy", action="append", default=[], help="NAME=SPEC (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic-world-benchmark"))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument(
        "--record",
        action="store_true",
        help="write each local policy's row into its folder (world-benchmark.json; `revseg demo` prints it)",
    )
    args = parser.parse_args(argv)
    bench = open_benchmark("mevis", args.world / args.split)
    tracker = load_tracker("classical")
    rows = []
    summaries = {}
    for name, baseline in BASELINES:
        runner = EvalRunner(
            bench, args.out / baseline, tracker=tracker, baseline=baseline, num_frames=args.frames
        )
        summaries[baseline] = runner.run(limit=args.limit)
        rows.append(row(name, summaries[baseline]))
    for item in args.policy:
        name, _, spec = item.partition("=")
        context = Context(
            policy=load_policy(spec or name, device="cpu"),
            tracker=tracker,
            num_frames=args.frames,
            max_attempts=1,
            on_parse_failure="fallback",
            sampling=SamplingParams(max_new_tokens=160),
        )
        runner = EvalRunner(bench, args.out / name.replace("/", "_"), context=context)
        measured = runner.run(limit=args.limit)
        rows.append(row(name, measured))
        folder = Path(policy_source(spec or name))
        if args.record and folder.is_dir():
            diag = measured["diagnostics"]
            write_world_record(
                folder,
                {
                    "split": args.split,
                    "expressions": diag["expressions"],
                    "command": f"python benchmarks/synthetic_world.py --world WORLD --limit {args.limit} "
                    f"--frames {args.frames} --policy {name}",
                    "J&F": round(float(measured["J&F"]), 2),
                    "centre_box_J&F": round(float(summaries["centre-box"]["J&F"]), 2),
                    "round1_parse_rate": diag["round1_parse_rate"],
                    "round2_parse_rate": diag["round2_parse_rate"],
                    "mean_box_iou": diag["mean_box_iou"],
                    "median_box_iou": diag["median_box_iou"],
                },
            )
    oracle = EvalRunner(
        bench, args.out / "oracle", tracker=tracker, baseline="oracle", num_frames=args.frames
    )
    rows.append(row("oracle keyframe + true box", oracle.run(limit=args.limit)))
    header = [
        "row",
        "J&F",
        "round-1 parse %",
        "round-2 parse %",
        "keyframe area ratio",
        "keyframe box IoU",
        "median box IoU",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
