"""Per intent, does round 1 name the right object? A row of `benchmarks/synthetic_world.py` read back.

    python benchmarks/world_descriptions.py --split runs/world/test --row runs/world-bench/revseg-tiny

For each intent of the split's expressions: how often round 1's description equals the
expression's `description` exactly, the keyframe box IoU (all, and where the description was
right) and J&F, from the row's records and traces (`Trace.result.description`: round 1's
answer as the chain used it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from revseg_agent.eval.runner import RECORDS, read_records
from revseg_agent.graphs.traces import Trace


def description_table(split: Path, row: Path) -> list[str]:
    meta = json.loads((split / "meta_expressions.json").read_text())["videos"]
    by_intent: dict[str, list[tuple[bool, float, float]]] = defaultdict(list)
    for record in read_records(row / RECORDS).values():
        expression = meta[record["video"]]["expressions"][record["exp_id"]]
        described = Trace.load(row / record["trace"]).result.description
        item = (
            described == expression.get("description"),
            float(record.get("box_iou") or 0.0),
            float(record["JF"]),
        )
        by_intent[str(expression.get("intent"))].append(item)
        by_intent["all"].append(item)
    lines = [
        "| intent | n | description right | box IoU | box IoU where right | J&F |",
        "|---|---|---|---|---|---|",
    ]
    for intent, items in sorted(by_intent.items(), key=lambda kv: -len(kv[1])):
        right = [iou for ok, iou, _ in items if ok]
        lines.append(
            f"| {intent} | {len(items)} | {sum(ok for ok, _, _ in items) / len(items):.0%} "
            f"| {statistics.mean(iou for _, iou, _ in items):.3f} "
            f"| {statistics.mean(right) if right else float('nan'):.3f} "
            f"| {100 * statistics.mean(jf for _, _, jf in items):.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", type=Path, required=True, help="the split the row measured")
    parser.add_argument(
        "--row", type=Path, required=True, help="one row folder of synthetic_world.py's --out"
    )
    args = parser.parse_args()
    print("\n".join(description_table(args.split, args.row)))


if __name__ == "__main__":
    main()
