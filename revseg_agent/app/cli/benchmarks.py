"""Benchmarks from the command line: `revseg eval` (run a split, resumable), `revseg score` (score
predictions, no model), `revseg submission` (zip for a scoring server)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from revseg_agent.app.cli.common import add_dataset_options, add_segment_options, run_settings
from revseg_agent.errors import InputError
from revseg_agent.eval.diagnostics import BASELINES
from revseg_agent.graphs.registry import check_device, check_policy_spec, check_tracker_spec
from revseg_agent.settings import DEFAULT_GROUP_SIZE


def add_commands(sub: Any) -> None:
    """score, submission, eval"""
    score = sub.add_parser("score", help="score a folder of predictions against a benchmark (no model)")
    add_dataset_options(score)
    score.add_argument("--pred", required=True, type=Path, help="predictions in the benchmark's own layout")
    score.add_argument("--out", type=Path, help="write the results JSON here")
    score.add_argument("--csv", type=Path, help="write one row per expression here")

    submit = sub.add_parser(
        "submission", help="zip predictions for a server-scored benchmark (Ref-YouTube-VOS)"
    )
    submit.add_argument("--dataset", required=True, choices=["refytvos"])
    submit.add_argument("--root", required=True, type=Path, help="the benchmark's root folder")
    submit.add_argument("--split", help="split (default: valid)")
    submit.add_argument("--pred", required=True, type=Path, help="predictions in the benchmark's own layout")
    submit.add_argument("--out", required=True, type=Path, help="the zip to upload")

    ev = sub.add_parser("eval", help="run the graph (or a baseline) over a benchmark split; resumable")
    add_dataset_options(ev)
    ev.add_argument("--out", required=True, type=Path, help="output folder (an existing one is resumed)")
    ev.add_argument("--limit", type=int, help="only the first N expressions")
    ev.add_argument(
        "--workers",
        type=int,
        default=1,
        help="videos run at once (worth it with a served policy, which batches requests)",
    )
    ev.add_argument(
        "--per-expression",
        action="store_true",
        help="run each expression alone (default: a video's expressions together: frames decoded "
        "once, batched policy calls, one tracker pass; the same answers and masks)",
    )
    ev.add_argument(
        "--group-size",
        type=int,
        default=DEFAULT_GROUP_SIZE,
        help=f"a video's expressions run together at most (default {DEFAULT_GROUP_SIZE}; memory of a pass)",
    )
    ev.add_argument(
        "--baseline", choices=BASELINES, help="skip the policy: oracle, random-keyframe or centre-box"
    )
    ev.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run --workers Ray actors, each with its own policy and tracker (pip install -e .[ray]); "
        "no address: a local cluster, else e.g. auto or ray://head:10001",
    )
    ev.add_argument("--gpus-per-worker", type=float, default=0.0, help="with --ray: GPUs per actor")
    add_segment_options(ev)

    score.set_defaults(run=run_score)
    submit.set_defaults(run=run_submission)
    ev.set_defaults(run=run_eval)


def run_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from revseg_agent.eval.datasets import open_benchmark
    from revseg_agent.eval.scoring import expressions_csv, format_table, score_predictions
    from revseg_agent.io import atomic_write_text

    bench = open_benchmark(args.dataset, args.root, args.split)
    if not args.pred.is_dir():
        raise InputError(f"prediction folder not found: {args.pred}")
    samples = bench.samples()
    with tqdm(total=len(samples), desc=f"score {args.dataset}", unit="expr") as bar:
        summary = score_predictions(
            bench, args.pred, missing=args.missing, samples=samples, progress=bar.update
        )
    print(format_table(summary))
    if args.out:
        atomic_write_text(args.out, json.dumps(summary, indent=2))
    if args.csv:
        atomic_write_text(args.csv, expressions_csv(summary))
    return 0


def run_submission(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from revseg_agent.eval.datasets import open_benchmark
    from revseg_agent.eval.submission import write_submission

    bench = open_benchmark(args.dataset, args.root, args.split)
    if not args.pred.is_dir():
        raise InputError(f"prediction folder not found: {args.pred}")
    with tqdm(total=len(bench.samples()), desc="submission", unit="expr") as bar:
        count = write_submission(bench, args.pred, args.out, progress=bar.update)
    print(f"{count} expressions -> {args.out} (upload it to the benchmark's server)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from revseg_agent.eval.report import write_report
    from revseg_agent.eval.scoring import format_table
    from revseg_agent.eval.spec import EvalSpec

    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.group_size < 1:
        raise InputError(f"--group-size must be at least 1, got {args.group_size}")
    spec = EvalSpec(
        **run_settings(args),
        dataset=args.dataset,
        root=args.root,
        split=args.split,
        out=args.out,
        baseline=args.baseline,
        missing=args.missing,
        workers=1 if args.ray else args.workers,
        per_expression=args.per_expression,
        group_size=args.group_size,
    )
    check_tracker_spec(spec.tracker)
    check_device(args.device)
    if spec.baseline is None:  # a baseline runs no policy
        check_policy_spec(spec.policy)
    executor = None
    if args.ray:
        from revseg_agent.eval.distributed import RayExecutor, RayOptions

        address = None if args.ray == "local" else args.ray
        options = RayOptions(address=address, workers=args.workers, gpus_per_worker=args.gpus_per_worker)
        executor = RayExecutor(spec, options)
    runner = spec.build_runner(load=executor is None)  # with Ray, only the workers load models
    summary = runner.run(limit=args.limit, executor=executor)
    print(format_table(summary))
    report = write_report(args.out, runner.bench)
    print(f"results: {args.out / 'results.json'}  report: {report}")
    return 0
