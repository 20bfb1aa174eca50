"""`revseg`: the command line (`python -m revseg_agent` is the same). One module per family:

    segment     revseg segment VIDEO QUERY --out DIR [--policy HUB_ID_OR_PATH|served:URL]
                       [--tracker sam2|classical] [--sam2-config NAME]
                       [--sam2-checkpoint PATH] [--frames N] [--device cpu|cuda] [--step]
    benchmarks  revseg eval  --dataset mevis|revos|reasonvos|refytvos|refdavis --root ROOT [--split NAME]
                             --out DIR [--limit N] [--workers N] [--ray [ADDRESS]] [--baseline NAME]
                             [the segment options]
                revseg score --dataset ... --root GT_ROOT --pred PRED_DIR [--out FILE.json] [--csv FILE.csv]
                revseg submission --dataset refytvos --root ROOT --pred PRED_DIR --out FILE.zip
    train       revseg train grpo    --config recipes/<name>.yaml [--output-dir DIR]
                                     [--max-steps N] [--resume]
                revseg train sft     --config recipes/<name>-sft.yaml [--output-dir DIR]
                                     [--max-steps N] [--resume]
                revseg train plan    --config recipes/<name>.yaml [--num-processes N] [--gpu-memory-gb GB]
                revseg train rescore --traces TRACES.jsonl --config recipes/<name>.yaml --out RESCORED.jsonl
    tools       revseg demo [--out DIR]      offline demo on a generated clip with the shipped tiny policy
                revseg synth --out DIR       a synthetic reasoning-VOS world (MeViS layout, exact masks)
                revseg tiny-policy DIR       a tiny random-init Qwen2.5-VL checkpoint (tests, demos)
                revseg inspect-policy HUB_ID_OR_PATH [--frames N] [--json]
                                             what a run uses from a checkpoint (configs only)
    ui          revseg ui [--policy SPEC ...] [--host H --auth USER:PASSWORD] [--allow-dir DIR]
                                             step through the chain in a browser page

Exit codes: 0 success; 2 bad input (arguments, video, checkpoint); 3 the reasoning chain failed
(e.g. an answer that never parsed; the trace summary is printed); 4 out of memory (GPU);
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from revseg_agent.app.cli import benchmarks, segment, tools, train, ui
from revseg_agent.app.cli.common import EXIT_BAD_INPUT, EXIT_CHAIN_FAILED, EXIT_RESOURCES
from revseg_agent.errors import (
    CheckpointError,
    InputError,
    ResourceError,
    RevsegError,
    VideoError,
    is_out_of_memory,
    out_of_memory_message,
)
from revseg_agent.eval.datasets import DatasetError

__all__ = ["EXIT_BAD_INPUT", "EXIT_CHAIN_FAILED", "EXIT_RESOURCES", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Every command, each family adding its own (`segment`, `benchmarks`, `train`, `tools`, `ui`)."""
    parser = argparse.ArgumentParser(
        prog="revseg", description="Reasoning video object segmentation (ReVSeg)."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for family in (segment, benchmarks, train, tools, ui):
        family.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except (InputError, VideoError, CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ResourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RESOURCES
    except Exception as exc:  # torch's out-of-memory from anywhere a node did not catch it
        if not is_out_of_memory(exc):
            raise
        where = "rollouts" if args.command == "train" else f"revseg {args.command}"
        print(f"error: {out_of_memory_message(where, exc)}", file=sys.stderr)
        return EXIT_RESOURCES
    except RevsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CHAIN_FAILED
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
