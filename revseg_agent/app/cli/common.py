"""What several command families share: the exit codes, the segment and dataset options, and the
tracker spec and graph context built from them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from revseg_agent.eval.datasets import DATASETS
from revseg_agent.specs import TrackerSpec
from revseg_agent.video import DEFAULT_NUM_FRAMES

EXIT_BAD_INPUT = 2
EXIT_CHAIN_FAILED = 3
EXIT_RESOURCES = 4


def add_segment_options(p: argparse.ArgumentParser) -> None:
    from revseg_agent.policies.released import DEFAULT_POLICY
    from revseg_agent.tools.sam2_tracker import DEFAULT_SAM2_CONFIG

    p.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        help="hub id or local folder of a Qwen2.5-VL checkpoint, or served:<base url>[#<model>] for an "
        "OpenAI-compatible server (e.g. served:http://127.0.0.1:8000/v1)",
    )
    p.add_argument("--tracker", choices=["sam2", "classical"], default="sam2")
    p.add_argument("--sam2-config", default=DEFAULT_SAM2_CONFIG, help="sam2 config name")
    p.add_argument(
        "--sam2-checkpoint", help="SAM2 checkpoint (.pt); default: download facebook/sam2.1-hiera-large"
    )
    p.add_argument(
        "--sam2-image-size", type=int, help="lower SAM2's input size (default 1024) to save memory"
    )
    p.add_argument("--frames", type=int, default=DEFAULT_NUM_FRAMES, help="frames sampled for round 1")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument(
        "--max-attempts", type=int, default=3, help="attempts per round when an answer does not parse"
    )
    p.add_argument(
        "--on-parse-failure",
        choices=["fail", "fallback"],
        default="fail",
        help="after the last attempt: fail (exit 3) or use the documented fallback (see Context)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help="new tokens per round; default: what the policy was trained with (max_new_tokens in its "
        "generation_config.json, written by revseg train), else 1024",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True, type=Path, help="the benchmark's root folder")
    p.add_argument("--split", help="split or expression-set name where the layout has several")
    p.add_argument(
        "--missing",
        choices=["zero", "skip"],
        help="a missing prediction scores 0 or is left out (default: the benchmark's own rule)",
    )


def tracker_spec(args: argparse.Namespace) -> str:
    """The tracker spec the `--tracker` / `--sam2-*` options name (`TrackerSpec.from_options`)."""
    return TrackerSpec.from_options(
        args.tracker, checkpoint=args.sam2_checkpoint, config=args.sam2_config
    ).text


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The segment options as `RunSettings` fields (`settings`): what `segment` and `eval` run."""
    from revseg_agent.policies.base import SamplingParams

    return {
        "policy": args.policy,
        "tracker": tracker_spec(args),
        "device": args.device,
        "sam2_image_size": args.sam2_image_size,
        "num_frames": args.frames,
        "max_attempts": args.max_attempts,
        "on_parse_failure": args.on_parse_failure,
        "sampling": SamplingParams(max_new_tokens=args.max_new_tokens),
    }
