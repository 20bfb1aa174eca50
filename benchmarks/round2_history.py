"""Round 2 after a perfect round 1: how much of the chain's box error is round 1's, how much the history's?

    python benchmarks/round2_history.py --split runs/world/valid --policy revseg-tiny [--frames 8]

For each expression of a synthetic-world split, the ideal chain (`training.sft.chain_example`,
what SFT teaches): round 1 answers the true description and the sampled frame where the target is
largest. The policy then answers round 2 greedily on that keyframe (a) after that round-1 answer,
with the video (the graph's default chat, `round2_with_history`) and (b) alone. Score: IoU of the
hull of the answer's boxes with the hull of the targets' boxes (0 when nothing parses), the
chain's `box_iou`. Per intent, side by side. The chain's own keyframe box IoU
(`world_descriptions.py` on a `synthetic_world.py` row) minus (a) is what round 1's mistakes
cost; (b) minus (a), what the history costs.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from revseg_agent.eval.datasets import open_benchmark
from revseg_agent.graphs.chats import KEYFRAME_REF, round2_messages
from revseg_agent.graphs.registry import load_policy
from revseg_agent.parsing import BoxAnswer, parse_box_answer, to_frame_space
from revseg_agent.policies.base import Generation, Policy, SamplingParams, box_units
from revseg_agent.training.data import benchmark_samples
from revseg_agent.training.recipe import BenchmarkData
from revseg_agent.training.sft import ChainExample, chain_example
from revseg_agent.types import Box

GREEDY_BOX = SamplingParams(max_new_tokens=60)


def hull_iou(policy: Policy, gen: Generation, example: ChainExample) -> float:
    """IoU of the hull of `gen`'s boxes (frame pixels) with the hull of the example's targets."""
    answer = parse_box_answer(gen.text, units=box_units(policy))
    if not isinstance(answer, BoxAnswer):
        return 0.0
    boxes = to_frame_space(answer, model_size=gen.image_sizes[-1], frame_size=example.frame_size)
    if not isinstance(boxes, tuple) or not boxes:  # a box outside the image does not count
        return 0.0
    return Box.hull(list(boxes)).iou(Box.hull(list(example.boxes)))


Pairs = dict[str, list[tuple[float, float]]]


def measure(policy: Policy, split: Path, frames: int, limit: int | None) -> Pairs:
    """Per intent (and "all"): (IoU after the ideal round 1, IoU alone) of each expression."""
    intents = {s.key: str(s.extra.get("intent")) for s in open_benchmark("mevis", split).samples()}
    by_intent: Pairs = defaultdict(list)
    samples = benchmark_samples(BenchmarkData(dataset="mevis", root=str(split)))
    for sample in samples[:limit] if limit else samples:
        example = chain_example(sample, frames)
        if not example.boxes:  # the target shows on no sampled frame: nothing to box
            continue
        messages, visuals = example.round2
        (after,) = policy.generate(messages, visuals, sampling=GREEDY_BOX)
        (alone,) = policy.generate(
            round2_messages(example.label), {KEYFRAME_REF: visuals[KEYFRAME_REF]}, sampling=GREEDY_BOX
        )
        pair = (hull_iou(policy, after, example), hull_iou(policy, alone, example))
        by_intent[intents[sample.sample_id]].append(pair)
        by_intent["all"].append(pair)
    return by_intent


def table(by_intent: Pairs) -> list[str]:
    lines = [
        "| intent | n | after the ideal round 1: mean / > 0.5 | alone: mean / > 0.5 |",
        "|---|---|---|---|",
    ]
    for intent, pairs in sorted(by_intent.items(), key=lambda kv: -len(kv[1])):
        after = [a for a, _ in pairs]
        alone = [b for _, b in pairs]
        lines.append(
            f"| {intent} | {len(pairs)} "
            f"| {statistics.mean(after):.3f} / {statistics.mean(a > 0.5 for a in after):.0%} "
            f"| {statistics.mean(alone):.3f} / {statistics.mean(b > 0.5 for b in alone):.0%} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", type=Path, required=True, help="a `revseg synth` split folder")
    parser.add_argument("--policy", default="revseg-tiny", help="a policy spec, as `revseg segment --policy`")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    policy = load_policy(args.policy, device="cpu")
    print("\n".join(table(measure(policy, args.split, args.frames, args.limit))))


if __name__ == "__main__":
    main()
