"""Per intent, does round 1 name the right object? A row of `benchmarks/synthetic_world.py` read back.

    python benchmarks/world_descriptions.py --split runs/world/test --row runs/world-bench/revseg-tiny

For each intent of the split's expressions: how often round 1's description equals the
expression's `description` exactly, how often its reasoning lists exactly the video's objects
(a policy trained with `think_inventory`: "The video shows the red circle (large, moves) and
..."; "-" when it lists none), how often the chosen keyframe shows the target at all (a
keyframe without it caps round 2's box at IoU 0, whatever the description), the keyframe box
IoU (all, and where the description was right) and J&F, from the row's records and traces
(`Trace.result.description`: round 1's answer as the chain used it).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from revseg_agent.eval.runner import RECORDS, read_records
from revseg_agent.graphs.names import SEMANTIC_INTERPRETATION
from revseg_agent.graphs.traces import Trace
from revseg_agent.synth.queries import NAME_PATTERN as NAME

LISTED = re.compile(r"The video shows (.*?)\.(?: |<|$)")


def listed_objects(trace: Trace) -> set[str] | None:
    """The object names round 1's reasoning lists after "The video shows" (None: no list)."""
    step = trace.final_step(SEMANTIC_INTERPRETATION)
    found = LISTED.search(step.completion) if step is not None and step.completion else None
    return set(NAME.findall(found.group(1))) if found else None


def description_table(split: Path, row: Path) -> list[str]:
    meta = json.loads((split / "meta_expressions.json").read_text())["videos"]
    by_intent: dict[str, list[tuple[bool, float, float, bool | None, bool]]] = defaultdict(list)
    for record in read_records(row / RECORDS).values():
        video = meta[record["video"]]
        expression = video["expressions"][record["exp_id"]]
        trace = Trace.load(row / record["trace"])
        listed = listed_objects(trace)
        truth = {o["name"] for o in video.get("objects", {}).values()}
        item = (
            trace.result.description == expression.get("description"),
            float(record.get("box_iou") or 0.0),
            float(record["JF"]),
            None if listed is None else listed == truth,
            bool(record.get("target_on_keyframe")),
        )
        by_intent[str(expression.get("intent"))].append(item)
        by_intent["all"].append(item)
    lines = [
        "| intent | n | description right | objects listed right | target on keyframe | box IoU "
        "| box IoU where right | J&F |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for intent, items in sorted(by_intent.items(), key=lambda kv: -len(kv[1])):
        right = [iou for ok, iou, *_ in items if ok]
        lists = [listed for *_, listed, _ in items if listed is not None]
        shown = sum(on for *_, on in items) / len(items)
        lines.append(
            f"| {intent} | {len(items)} | {sum(ok for ok, *_ in items) / len(items):.0%} "
            f"| {f'{sum(lists) / len(lists):.0%}' if lists else '-'} | {shown:.0%} "
            f"| {statistics.mean(iou for _, iou, *_ in items):.3f} "
            f"| {statistics.mean(right) if right else float('nan'):.3f} "
            f"| {100 * statistics.mean(jf for _, _, jf, *_ in items):.1f} |"
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
