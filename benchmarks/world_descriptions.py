"""Per intent, does round 1 name the right object? A row of `benchmarks/synthetic_world.py` read back.

    python benchmarks/world_descriptions.py --split runs/world/test --row runs/world-bench/revseg-tiny

For each intent of the split's expressions: how often round 1's description equals the
expression's `description` exactly, how often its reasoning lists exactly the video's objects
(a policy trained with `think_inventory`: "The video shows the red circle (large, moves) and
..."; "-" when it lists none), how often the chosen keyframe shows the target at all (a
keyframe without it caps round 2's box at IoU 0, whatever the description), the keyframe box
IoU (all, and where the description was right) and J&F, from the row's records and traces
(`Trace.result.description`: round 1's answer as the chain used it). On a split that asks some
expressions in a phrasing held out of training (the test split), two more rows split the
expressions by that (`synth.queries.held_out_phrasing`).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from revseg_agent.eval.runner import RECORDS, read_records
from revseg_agent.graphs.names import SEMANTIC_INTERPRETATION
from revseg_agent.graphs.traces import Trace
from revseg_agent.synth.queries import NAME_PATTERN as NAME
from revseg_agent.synth.queries import held_out_phrasing

LISTED = re.compile(r"The video shows (.*?)\.(?: |<|$)")


def listed_objects(trace: Trace) -> set[str] | None:
    """The object names round 1's reasoning lists after "The video shows" (None: no list)."""
    step = trace.final_step(SEMANTIC_INTERPRETATION)
    found = LISTED.search(step.completion) if step is not None and step.completion else None
    return set(NAME.findall(found.group(1))) if found else None


class Answer(NamedTuple):
    """One expression of a row, as the table counts it."""

    described_right: bool
    box_iou: float
    jf: float
    listed_right: bool | None  # None: round 1 listed no objects
    target_on_keyframe: bool


def description_table(split: Path, row: Path) -> list[str]:
    meta = json.loads((split / "meta_expressions.json").read_text())["videos"]
    by_intent: dict[str, list[Answer]] = defaultdict(list)
    by_phrasing: dict[str, list[Answer]] = defaultdict(list)
    for record in read_records(row / RECORDS).values():
        video = meta[record["video"]]
        expression = video["expressions"][record["exp_id"]]
        trace = Trace.load(row / record["trace"])
        listed = listed_objects(trace)
        truth = {o["name"] for o in video.get("objects", {}).values()}
        answer = Answer(
            described_right=trace.result.description == expression.get("description"),
            box_iou=float(record.get("box_iou") or 0.0),
            jf=float(record["JF"]),
            listed_right=None if listed is None else listed == truth,
            target_on_keyframe=bool(record.get("target_on_keyframe")),
        )
        intent = str(expression.get("intent"))
        by_intent[intent].append(answer)
        by_intent["all"].append(answer)
        held_out = held_out_phrasing(intent, str(expression.get("exp", "")))
        by_phrasing["phrasing: held out" if held_out else "phrasing: seen in training"].append(answer)
    lines = [
        "| intent | n | description right | objects listed right | target on keyframe | box IoU "
        "| box IoU where right | J&F |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted(by_intent.items(), key=lambda kv: -len(kv[1]))
    if "phrasing: held out" in by_phrasing:  # the test split: rows for words never trained on
        groups += sorted(by_phrasing.items())
    for intent, answers in groups:
        right = [a.box_iou for a in answers if a.described_right]
        lists = [a.listed_right for a in answers if a.listed_right is not None]
        lines.append(
            f"| {intent} | {len(answers)} "
            f"| {statistics.mean(a.described_right for a in answers):.0%} "
            f"| {f'{statistics.mean(lists):.0%}' if lists else '-'} "
            f"| {statistics.mean(a.target_on_keyframe for a in answers):.0%} "
            f"| {statistics.mean(a.box_iou for a in answers):.3f} "
            f"| {statistics.mean(right) if right else float('nan'):.3f} "
            f"| {100 * statistics.mean(a.jf for a in answers):.1f} |"
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
