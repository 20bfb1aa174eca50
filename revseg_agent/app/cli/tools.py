"""The commands around the chain: `revseg demo`, `revseg synth` (a synthetic world), `revseg
tiny-policy` and `revseg inspect-policy`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from revseg_agent.errors import CheckpointError, InputError
from revseg_agent.graphs.registry import check_policy_spec, check_tracker_spec, load_policy
from revseg_agent.io import check_replaceable
from revseg_agent.policies.frame_layout import DEFAULT_FRAME_LAYOUT, FRAME_LAYOUTS
from revseg_agent.video import DEFAULT_NUM_FRAMES


def add_commands(sub: Any) -> None:
    """demo, synth, tiny-policy, inspect-policy"""
    demo = sub.add_parser(
        "demo", help="offline demo: a generated clip and query through the chain, with an HTML page"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.add_argument("--seed", type=int, default=0, help="which generated clip and query")
    demo.add_argument("--policy", default="revseg-tiny", help="default: the shipped tiny policy")
    demo.add_argument("--tracker", default="classical", help="default: the weight-free tracker")
    demo.add_argument("--frames", type=int, default=8, help="frames sampled for round 1")

    synth = sub.add_parser("synth", help="write a synthetic reasoning-VOS world (MeViS layout, exact masks)")
    synth.add_argument("--out", required=True, type=Path, help="folder for train/, valid/ and test/")
    synth.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    synth.add_argument("--train", type=int, default=300, help="videos in the train split")
    synth.add_argument("--valid", type=int, default=40, help="videos in the validation split")
    synth.add_argument("--test", type=int, default=100, help="videos in the test split")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing world")

    tiny = sub.add_parser("tiny-policy", help="write a tiny random-init Qwen2.5-VL or Qwen3-VL checkpoint")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--family", choices=("qwen2.5-vl", "qwen3-vl"), default="qwen2.5-vl")
    tiny.add_argument(
        "--released",
        action="store_true",
        help="Qwen2.5-VL: the released 7B vocabulary ids, processor budgets and layout; "
        "Qwen3-VL: the released processor budgets",
    )
    tiny.add_argument(
        "--from-release",
        choices=("2B", "4B", "30B-A3B"),
        default="2B",
        help="Qwen3-VL: which released configuration the tiny one is shrunk from",
    )

    inspect = sub.add_parser(
        "inspect-policy", help="what a run uses from a Qwen2.5-VL checkpoint (configs only, no weights)"
    )
    inspect.add_argument("policy", help="hub id or local folder, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    inspect.add_argument("--frames", type=int, default=DEFAULT_NUM_FRAMES, help="frames sampled for round 1")
    inspect.add_argument("--frame-layout", choices=FRAME_LAYOUTS, default=DEFAULT_FRAME_LAYOUT)
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.set_defaults(run=run_demo)
    synth.set_defaults(run=run_synth)
    tiny.set_defaults(run=run_tiny_policy)
    inspect.set_defaults(run=run_inspect_policy)


def run_demo(args: argparse.Namespace) -> int:
    from revseg_agent.app.demo import run_demo as demo
    from revseg_agent.eval.world_record import record_line

    check_policy_spec(args.policy)
    check_tracker_spec(args.tracker)
    run = demo(
        args.out,
        seed=args.seed,
        policy=load_policy(args.policy, device="cpu"),
        tracker=args.tracker,
        num_frames=args.frames,
        overwrite=True,
    )
    print(run.trace.summary())
    print(f"query: {run.query.text!r} (the answer: {run.query.description})")
    print(f"J&F against the exact ground truth: {100 * run.jf:.1f}  ({run.seconds:.1f} s)")
    print(f"{args.policy} {record_line(_world_record(args.policy))}")
    print(f"wrote masks/, masks.json, overlay.mp4, trace.json and demo.html to {args.out}")
    return 0


def _world_record(spec: str) -> dict[str, Any] | None:
    from revseg_agent.eval.world_record import read_world_record
    from revseg_agent.graphs.registry import policy_source
    from revseg_agent.specs import PolicySpec

    return None if PolicySpec.parse(spec).served else read_world_record(policy_source(spec))


def run_synth(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from revseg_agent.synth import WorldSpec, write_world

    if min(args.train, args.valid, args.test) < 0:
        raise InputError("--train, --valid and --test must not be negative")
    spec = WorldSpec(seed=args.seed, train=args.train, valid=args.valid, test=args.test)
    check_replaceable(args.out, overwrite=args.overwrite)
    with tqdm(total=args.train + args.valid + args.test, desc="synth", unit="video") as bar:
        summary = write_world(args.out, spec, overwrite=args.overwrite, progress=bar.update)
    for split, counts in summary["splits"].items():
        print(
            f"{split}: {counts['videos']} videos, {counts['expressions']} expressions -> {args.out / split}"
        )
    return 0


def run_tiny_policy(args: argparse.Namespace) -> int:
    from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl, build_tiny_qwen3_vl

    released = args.released
    if args.family == "qwen3-vl":
        print(
            build_tiny_qwen3_vl(
                args.out, released=args.from_release, seed=args.seed, released_budgets=released
            )
        )
    else:
        print(
            build_tiny_qwen2_5_vl(
                args.out, seed=args.seed, released_budgets=released, released_vocab=released
            )
        )
    return 0


def run_inspect_policy(args: argparse.Namespace) -> int:
    from revseg_agent.policies.inspect import inspect_policy
    from revseg_agent.policies.qwen import check_policy_source

    name = str(args.policy)
    check_policy_source(name)
    try:
        report = inspect_policy(name, num_frames=args.frames, frame_layout=args.frame_layout)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the configs of policy {name!r}: {exc}") from exc
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    else:
        print("\n".join(report.lines()))
    return 0
