"""Cost of a G = 8 group rollout vs 8 independent rollouts vs one rollout (tiny Qwen2.5-VL).

Side by side in one run, on the demo clip, tracker skipped (as in training without a mask
reward). The group's runs go concurrently, share one frame cache (one video decode) and batch
their policy calls, which the caller's thread serves: round 1 is one call with 8 samples that
encodes the prompt (video included) once and samples 8 rows from its KV cache; round 2 is one
batch of 8 prompts that share round 1's prompt (token-in/token-out), encoded once as well, each
row running only its answer, keyframe and question. The goal: a group costs at most 2x a single
rollout.
Usage: python benchmarks/group_rollout.py [--group 8] [--repeats 3] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.policies.base import Policy, SamplingParams
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl
from revseg_agent.synth.square_clip import make_demo_clip
from revseg_agent.tools.classical import ClassicalTracker
from revseg_agent.training.rollouts import run_group


def contexts(policy: Policy, n: int, work: Path, max_new_tokens: int) -> list[Context]:
    return [
        Context(
            policy=policy,
            tracker=ClassicalTracker(),
            max_attempts=1,
            on_parse_failure="fallback",
            sampling=SamplingParams(do_sample=True, max_new_tokens=max_new_tokens, seed=g),
            run_tracker=False,
            artifacts_dir=work,
        )
        for g in range(n)
    ]


def run(policy: Policy, clip: Path, n: int, work: Path, max_new_tokens: int, *, group: bool = False) -> float:
    graph = build_graph()
    inputs = {"video_path": str(clip), "query": "the red square"}
    start = time.perf_counter()
    if group:
        run_group(graph, inputs, contexts(policy, n, work, max_new_tokens))
    else:
        for context in contexts(policy, n, work, max_new_tokens):
            graph.invoke(inputs, context=context)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="revseg-bench-"))
    clip = make_demo_clip(work / "clip.mp4")
    policy = QwenVLPolicy.from_pretrained(build_tiny_qwen2_5_vl(work / "tiny"), device="cpu")
    times: dict[str, list[float]] = {
        "single": [],
        "independent": [],
        "group, no prefix cache": [],
        "group": [],
    }
    run(policy, clip, 1, work, args.max_new_tokens)  # warm-up
    for _ in range(args.repeats):
        times["single"].append(run(policy, clip, 1, work, args.max_new_tokens))
        times["independent"].append(run(policy, clip, args.group, work, args.max_new_tokens))
        policy.share_prefix = False
        times["group, no prefix cache"].append(
            run(policy, clip, args.group, work, args.max_new_tokens, group=True)
        )
        policy.share_prefix = True
        times["group"].append(run(policy, clip, args.group, work, args.max_new_tokens, group=True))
    single = statistics.median(times["single"])
    print(f"{'rollouts':<24} {'ms':>9} {'x single':>9}")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"{name:<24} {1000 * ms:>9.1f} {ms / single:>8.2f}x")
    print(f"goal: group <= 2x single (G = {args.group})")


if __name__ == "__main__":
    main()
