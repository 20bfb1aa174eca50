"""Where does round 2's box land when it misses? Round 2 alone, per named object, by what the
boxed object shares with the target.

For every object of a synthetic-world split that an expression refers to (`eval.grounding.
scene_items`: the frame where it is largest, its name as the label), each policy answers round 2's
prompt alone, greedily; the box is classed by the object it overlaps most (`eval.grounding.
landing`): the target, another shape of the target's shape (another colour), another of its
colour (another shape), another object, the floor, or no box. Counted over all items and over
those where another object of the target's shape is in view (where a policy that reads the shape
and not the colour is at a coin flip).

Measured on the valid split (91 objects, session 24), the revseg-tiny shipped in session 23:
target 64 / 91; where another object of the target's shape was in view, target 15 / 28 and that
other shape 12 / 28 (colour was read no better than a coin flip).

Usage: python benchmarks/grounding_confusions.py --split runs/world/valid --policy NAME=SPEC [...]
"""

from __future__ import annotations

import argparse
import collections

import torch

from revseg_agent.eval.grounding import LANDINGS, answer_box, landing, scene_items
from revseg_agent.graphs.registry import load_policy


def has_twin(label: str, names: list[str]) -> bool:
    """Another object of the label's shape is in view."""
    return any(n != label and n.split()[-1] == label.split()[-1] for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", required=True, help="a synthetic-world split folder (runs/world/valid)")
    parser.add_argument("--policy", action="append", required=True, help="NAME=SPEC (a policy spec)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    items = scene_items(args.split)
    twins = [has_twin(i.label, list(i.boxes)) for i in items]
    print(f"{len(items)} objects, {sum(twins)} with another of their shape in view")
    print("| policy | items | " + " | ".join(LANDINGS) + " |")
    print("|---|---|" + "---|" * len(LANDINGS))
    for entry in args.policy:
        name, spec = entry.split("=", 1)
        policy = load_policy(spec, device="cpu")
        landed = [landing(answer_box(policy, i.frame, i.label), i.label, i.boxes) for i in items]
        for subset, keep in (("all", [True] * len(items)), ("same shape in view", twins)):
            counts = collections.Counter(x for x, k in zip(landed, keep, strict=True) if k)
            cells = " | ".join(str(counts[k]) for k in LANDINGS)
            print(f"| {name} ({subset}) | {sum(keep)} | {cells} |")


if __name__ == "__main__":
    main()
