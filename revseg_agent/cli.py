"""`revseg`: the command line.

    revseg segment VIDEO QUERY --out DIR [--policy HUB_ID_OR_PATH] [--tracker sam2|classical]
                   [--sam2-config NAME] [--sam2-checkpoint PATH] [--frames N] [--device cpu|cuda] [--step]
    revseg score --dataset mevis|revos|reasonvos|refytvos|refdavis --root GT_ROOT --pred PRED_DIR
                 [--out FILE.json]
    revseg eval  --dataset ... --root ROOT [--split NAME] --out DIR [--limit N] [the segment options]
    revseg train grpo    --config recipes/<name>.yaml [--output-dir DIR] [--max-steps N] [--resume]
    revseg train rescore --traces TRACES.jsonl --config recipes/<name>.yaml --out RESCORED.jsonl
    revseg train sft     --config recipes/<name>.yaml [--output-dir DIR] [--max-steps N] [--resume]
    revseg demo [--out DIR]          offline demo on a generated clip with a tiny random-init policy
    revseg tiny-policy DIR           write a tiny random-init Qwen2.5-VL checkpoint (tests, demos)
    revseg inspect-policy HUB_ID_OR_PATH [--frames N] [--json]
                                     what a run uses from a checkpoint; warns where it differs
                                     from the released Qwen2.5-VL-7B-Instruct (no weights loaded)

Exit codes: 0 success; 2 bad input (arguments, video, checkpoint); 3 the reasoning chain failed
(e.g. an answer that never parsed; the trace summary is printed); 4 out of memory (GPU);
130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

from revseg_agent.access import is_loopback
from revseg_agent.errors import (
    CheckpointError,
    InputError,
    PipelineFailure,
    ResourceError,
    RevsegError,
    VideoError,
    is_out_of_memory,
    out_of_memory_message,
)
from revseg_agent.eval.datasets import DATASETS, DatasetError
from revseg_agent.eval.diagnostics import BASELINES
from revseg_agent.io import check_replaceable, claim_output_dir
from revseg_agent.policies.frame_layout import DEFAULT_FRAME_LAYOUT, FRAME_LAYOUTS
from revseg_agent.registry import (
    check_device,
    check_policy_spec,
    check_tracker_spec,
    load_policy,
    load_tracker,
)
from revseg_agent.video import DEFAULT_NUM_FRAMES, open_video

logger = logging.getLogger("revseg_agent.cli")

EXIT_BAD_INPUT = 2
EXIT_CHAIN_FAILED = 3
EXIT_RESOURCES = 4


def _add_segment_options(p: argparse.ArgumentParser) -> None:
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


def _add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", required=True, type=Path, help="the benchmark's root folder")
    p.add_argument("--split", help="split or expression-set name where the layout has several")
    p.add_argument(
        "--missing",
        choices=["zero", "skip"],
        help="a missing prediction scores 0 or is left out (default: the benchmark's own rule)",
    )


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="revseg", description="Reasoning video object segmentation (ReVSeg)."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment the object a query refers to, on every frame")
    seg.add_argument("video", help="video file (mp4, avi, ...) or folder of frames")
    seg.add_argument("query", help="what to segment, e.g. 'the dog that jumps last'")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument(
        "--step", action="store_true", help="pause after each node; show and optionally edit state"
    )
    _add_segment_options(seg)

    score = sub.add_parser("score", help="score a folder of predictions against a benchmark (no model)")
    _add_dataset_options(score)
    score.add_argument("--pred", required=True, type=Path, help="predictions in the benchmark's own layout")
    score.add_argument("--out", type=Path, help="write the results JSON here")
    score.add_argument("--csv", type=Path, help="write one row per expression here")

    synth = sub.add_parser("synth", help="write a synthetic reasoning-VOS world (MeViS layout, exact masks)")
    synth.add_argument("--out", required=True, type=Path, help="folder for train/, valid/ and test/")
    synth.add_argument("--seed", type=int, default=0, help="the same seed writes the same files")
    synth.add_argument("--train", type=int, default=300, help="videos in the train split")
    synth.add_argument("--valid", type=int, default=40, help="videos in the validation split")
    synth.add_argument("--test", type=int, default=100, help="videos in the test split")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing world")

    submit = sub.add_parser(
        "submission", help="zip predictions for a server-scored benchmark (Ref-YouTube-VOS)"
    )
    submit.add_argument("--dataset", required=True, choices=["refytvos"])
    submit.add_argument("--root", required=True, type=Path, help="the benchmark's root folder")
    submit.add_argument("--split", help="split (default: valid)")
    submit.add_argument("--pred", required=True, type=Path, help="predictions in the benchmark's own layout")
    submit.add_argument("--out", required=True, type=Path, help="the zip to upload")

    ev = sub.add_parser("eval", help="run the graph (or a baseline) over a benchmark split; resumable")
    _add_dataset_options(ev)
    ev.add_argument("--out", required=True, type=Path, help="output folder (an existing one is resumed)")
    ev.add_argument("--limit", type=int, help="only the first N expressions")
    ev.add_argument(
        "--workers",
        type=int,
        default=1,
        help="expressions run at once (worth it with a served policy, which batches requests)",
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
    _add_segment_options(ev)

    train = sub.add_parser("train", help="GRPO on replayed graph traces").add_subparsers(
        dest="train_command", required=True
    )
    grpo = train.add_parser("grpo", help="train the policy with GRPO from a recipe")
    grpo.add_argument("--config", required=True, type=Path, help="recipe YAML (see recipes/)")
    grpo.add_argument("--output-dir", type=Path, help="overrides the recipe's output_dir")
    grpo.add_argument("--max-steps", type=int, help="overrides the recipe's max_steps")
    grpo.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    sft = train.add_parser(
        "sft", help="supervised fine-tuning on the ideal chain's answers from ground truth (an SFT recipe)"
    )
    sft.add_argument(
        "--config", required=True, type=Path, help="SFT recipe YAML (`trainer: sft`, see recipes/)"
    )
    sft.add_argument(
        "--output-dir", type=Path, help="overrides the recipe's output_dir (the policy goes in policy/)"
    )
    sft.add_argument("--max-steps", type=int, help="overrides the recipe's max_steps")
    sft.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    plan = train.add_parser("plan", help="per-GPU memory plan of a recipe; exits 1 when it cannot fit")
    plan.add_argument("--config", required=True, type=Path, help="recipe YAML (GRPO or SFT)")
    plan.add_argument("--num-processes", type=int, default=1, help="GPUs (data-parallel processes)")
    plan.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory of one GPU in GB")
    plan.add_argument(
        "--headroom", type=float, default=0.10, help="share of GPU memory the plan leaves free (default 0.10)"
    )
    rescore = train.add_parser("rescore", help="recompute rewards of stored traces (no model runs)")
    rescore.add_argument("--traces", required=True, type=Path)
    rescore.add_argument("--config", required=True, type=Path, help="recipe YAML whose rewards to apply")
    rescore.add_argument("--out", required=True, type=Path)

    demo = sub.add_parser(
        "demo", help="offline demo: a generated clip and query through the chain, with an HTML page"
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.add_argument("--seed", type=int, default=0, help="which generated clip and query")
    demo.add_argument("--policy", default="revseg-tiny", help="default: the shipped tiny policy")
    demo.add_argument("--tracker", default="classical", help="default: the weight-free tracker")
    demo.add_argument("--frames", type=int, default=8, help="frames sampled for round 1")

    ui = sub.add_parser("ui", help="step through the chain in a browser page (Gradio; pip install .[ui])")
    ui.add_argument(
        "--policy",
        action="append",
        help="policy spec offered in the page (repeat for several); default: revseg-tiny",
    )
    ui.add_argument("--tracker", choices=["classical", "sam2"], action="append", help="default: classical")
    ui.add_argument("--sam2-checkpoint", help="SAM2 checkpoint (.pt) for --tracker sam2; default: the hub's")
    ui.add_argument("--sam2-config", default=None, help="sam2 config name")
    ui.add_argument("--sam2-image-size", type=int, help="lower SAM2's input size (default 1024)")
    ui.add_argument("--frames", type=int, default=8, help="frames sampled for round 1")
    ui.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    ui.add_argument("--work", type=Path, default=Path("revseg-ui"), help="runs, their files and runs.sqlite")
    ui.add_argument(
        "--host",
        default="127.0.0.1",
        help="default: loopback only; any other address needs --auth (see the README's Security)",
    )
    ui.add_argument("--port", type=int, default=7860)
    ui.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="the page's login (Gradio's); default: the REVSEG_UI_AUTH variable; required beyond loopback",
    )
    ui.add_argument(
        "--allow-dir",
        action="append",
        type=Path,
        metavar="DIR",
        help="a folder whose videos the page may open by path (repeat for several); default: any "
        "path on loopback, none beyond it (uploads and generated clips always work)",
    )
    ui.add_argument("--max-upload-mb", type=float, default=500.0, help="largest upload the page stores")

    tiny = sub.add_parser("tiny-policy", help="write a tiny random-init Qwen2.5-VL checkpoint")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--released", action="store_true", help="the released 7B vocabulary ids, processor budgets and layout"
    )

    inspect = sub.add_parser(
        "inspect-policy", help="what a run uses from a Qwen2.5-VL checkpoint (configs only, no weights)"
    )
    inspect.add_argument("policy", help="hub id or local folder, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    inspect.add_argument("--frames", type=int, default=DEFAULT_NUM_FRAMES, help="frames sampled for round 1")
    inspect.add_argument("--frame-layout", choices=FRAME_LAYOUTS, default=DEFAULT_FRAME_LAYOUT)
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _tracker_spec(args: argparse.Namespace) -> str:
    if args.tracker == "classical":
        return "classical"
    if args.sam2_checkpoint:
        return f"sam2:{args.sam2_checkpoint}:{args.sam2_config}"
    return "sam2-hub:"


def _load_tracker(args: argparse.Namespace) -> Any:
    return load_tracker(_tracker_spec(args), args.device, args.sam2_image_size)


def _context(args: argparse.Namespace, policy: Any, tracker: Any, **extra: Any) -> Any:
    """The graph's run-time context from the segment options."""
    from revseg_agent.graphs.context import Context
    from revseg_agent.policies.base import SamplingParams

    return Context(
        policy=policy,
        tracker=tracker,
        num_frames=args.frames,
        max_attempts=args.max_attempts,
        on_parse_failure=args.on_parse_failure,
        sampling=SamplingParams(max_new_tokens=args.max_new_tokens),
        **extra,
    )


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from revseg_agent.graphs.graph import build_graph
    from revseg_agent.graphs.names import NODES
    from revseg_agent.outputs import write_outputs
    from revseg_agent.pipeline import result_from_state
    from revseg_agent.step_editor import prompt_edit, show_update

    if not args.query.strip():
        raise InputError("the query is empty")
    if args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    check_replaceable(args.out, overwrite=args.overwrite)
    video = open_video(args.video)
    check_tracker_spec(_tracker_spec(args))  # cheap checks before the policy loads
    check_device(args.device)
    policy = load_policy(args.policy, device=args.device)
    tracker = _load_tracker(args)

    bar: dict[str, Any] = {}

    def progress(n: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(
                total=tracker.work_units(video), desc=f"tracking ({tracker.name})", unit="frame"
            )
        bar["bar"].update(n)

    context = _context(args, policy, tracker, track_progress=progress)
    inputs: dict[str, Any] | None = {"video_path": str(args.video), "query": args.query}
    if args.step:
        from langgraph.checkpoint.memory import InMemorySaver

        graph = build_graph(checkpointer=InMemorySaver(), interrupt_after=NODES)
        config: dict[str, Any] = {"configurable": {"thread_id": uuid.uuid4().hex}}
        while True:
            for update in graph.stream(inputs, config, context=context, stream_mode="updates"):
                for node, values in update.items():
                    if node != "__interrupt__":
                        show_update(node, values)
            inputs = None
            if not graph.get_state(config).next:
                break
            if not prompt_edit(graph, config):
                print("stopped; nothing written")
                return EXIT_CHAIN_FAILED
        state = graph.get_state(config).values
    else:
        state = build_graph().invoke(inputs, context=context)
    if "bar" in bar:
        bar["bar"].close()
    try:
        result = result_from_state(state, context)
    except PipelineFailure as failure:
        from revseg_agent.pipeline import trace_from_state

        print(trace_from_state(state, context).summary(), file=sys.stderr)
        print(
            f"error: the reasoning chain failed at {failure.node} ({failure.code}); nothing written",
            file=sys.stderr,
        )
        return EXIT_CHAIN_FAILED
    write_outputs(
        args.out,
        video=video,
        track=result.masks,
        trace=result.trace,
        masks_json=result.trace.result.masks_path or "",
        overwrite=args.overwrite,
    )
    print(result.trace.summary())
    print(f"wrote {video.num_frames} masks, masks.json, overlay.mp4 and trace.json to {args.out}")
    return 0


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


def run_eval(args: argparse.Namespace) -> int:
    from revseg_agent.eval.report import write_report
    from revseg_agent.eval.scoring import format_table
    from revseg_agent.eval.spec import EvalSpec

    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    spec = EvalSpec(
        dataset=args.dataset,
        root=args.root,
        split=args.split,
        out=args.out,
        baseline=args.baseline,
        policy=None if args.baseline else args.policy,
        tracker=_tracker_spec(args),
        device=args.device,
        sam2_image_size=args.sam2_image_size,
        num_frames=args.frames,
        max_attempts=args.max_attempts,
        on_parse_failure=args.on_parse_failure,
        max_new_tokens=args.max_new_tokens,
        missing=args.missing,
        workers=1 if args.ray else args.workers,
    )
    check_tracker_spec(spec.tracker)
    check_device(args.device)
    if spec.policy is not None:
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


def run_train(args: argparse.Namespace) -> int:
    from revseg_agent.training.recipe import Recipe, SFTRecipe, load_recipe

    loader = {"sft": SFTRecipe.load, "plan": load_recipe}.get(args.train_command, Recipe.load)
    try:
        recipe = loader(args.config)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"bad recipe {args.config}: {exc}") from exc
    if args.train_command == "plan":
        from revseg_agent.training.plan import plan_memory

        memory = plan_memory(
            recipe, num_processes=args.num_processes, gpu_memory_gb=args.gpu_memory_gb, headroom=args.headroom
        )
        print(memory.table())
        if not memory.fits:
            print(memory.fixes())
            return 1
        return 0
    assert isinstance(recipe, Recipe | SFTRecipe)
    if args.train_command == "rescore":
        from revseg_agent.training.store import TraceStore, rescore, write_records

        assert isinstance(recipe, Recipe)
        if not args.traces.is_file():
            raise InputError(f"traces not found: {args.traces}")
        records = rescore(list(TraceStore(args.traces)), recipe.rewards)
        write_records(args.out, records)
        totals = [r.rewards.get("total") or 0.0 for r in records]
        mean = sum(totals) / max(len(totals), 1)
        print(f"rescored {len(records)} traces; mean total reward {mean:.4f} -> {args.out}")
        return 0
    from revseg_agent.training.data import load_samples

    check_device(recipe.device, option="the recipe's device")
    if args.output_dir:
        recipe = recipe.model_copy(update={"output_dir": str(args.output_dir)})
    out = claim_output_dir(recipe.output_dir, f"train-{args.train_command}", option="--output-dir")
    samples = load_samples(recipe.data, out)
    if not samples:
        raise InputError(f"no training samples with a target in {recipe.data}")
    trainer: Any
    if isinstance(recipe, SFTRecipe):
        from revseg_agent.training.sft_trainer import SFTTrainer

        trainer = SFTTrainer(recipe, samples, output_dir=out, resume=args.resume)
    else:
        from revseg_agent.training.trainer import GRPOTrainer

        trainer = GRPOTrainer(recipe, samples, output_dir=out, resume=args.resume)

    from tqdm import tqdm

    limit = args.max_steps if args.max_steps is not None else recipe.max_steps
    bars: list[Any] = []

    def show(metrics: dict[str, float]) -> None:
        if not bars:  # the first step after set-up (which may have resumed from a checkpoint)
            bars.append(
                tqdm(total=limit, initial=int(metrics["step"]) - 1, desc=args.train_command, unit="step")
            )
        if "loss_round1" in metrics:
            bars[0].set_postfix_str(
                f"round 1 {metrics['loss_round1']:.3f} round 2 {metrics['loss_round2']:.3f}"
            )
        else:
            rewards = " ".join(f"{k[7:]}={v:.3f}" for k, v in metrics.items() if k.startswith("reward_"))
            bars[0].set_postfix_str(f"{rewards} loss={metrics['loss']:.4f} kl={metrics['kl']:.5f}")
        bars[0].update(1)

    try:
        trainer.train(max_steps=args.max_steps, on_step=show)
    finally:
        for bar in bars:
            bar.close()
        trainer.close()  # a torchrun job ends with its process group destroyed (`TrainerBase`)
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    if isinstance(recipe, SFTRecipe):
        from revseg_agent.training.sft_trainer import METRICS_FILE, POLICY_FOLDER

        print(f"policy saved to {out / POLICY_FOLDER} (use it as --policy or a recipe's policy)")
        print(f"losses per step: {out / METRICS_FILE}  checkpoints: {checkpoints}")
    else:
        print(f"metrics: {out / 'metrics.csv'}  checkpoints: {checkpoints}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from revseg_agent.synth.demo import run_demo as demo

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
    print(f"wrote masks/, masks.json, overlay.mp4, trace.json and demo.html to {args.out}")
    return 0


def run_ui(args: argparse.Namespace) -> int:
    try:
        from revseg_agent.ui.app import launch
    except ImportError as exc:
        raise InputError(f"the browser UI needs Gradio: pip install -e .[ui] ({exc})") from exc
    from revseg_agent.tools.sam2_tracker import DEFAULT_SAM2_CONFIG

    if args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise InputError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    auth = _ui_auth(args.auth)
    if not is_loopback(args.host) and auth is None:
        raise InputError(
            f"--host {args.host} serves the page to the network: give a login with --auth USER:PASSWORD "
            "(or the REVSEG_UI_AUTH variable), or keep the default 127.0.0.1"
        )
    for folder in args.allow_dir or []:
        if not folder.is_dir():
            raise InputError(f"--allow-dir {folder} is not a folder")
    check_device(args.device)
    specs = args.policy or ["revseg-tiny"]
    for spec in specs:
        check_policy_spec(spec)
    trackers: dict[str, Any] = {}
    for kind in args.tracker or ["classical"]:
        if kind == "classical":
            trackers["classical"] = "classical"
        else:
            spec = (
                f"sam2:{args.sam2_checkpoint}:{args.sam2_config or DEFAULT_SAM2_CONFIG}"
                if args.sam2_checkpoint
                else "sam2-hub:"
            )
            trackers["sam2"] = load_tracker(spec, args.device, args.sam2_image_size)
    policies = {spec: load_policy(spec, device=args.device) for spec in specs}
    print(f"revseg ui on http://{args.host}:{args.port} (runs in {args.work}); Ctrl+C stops it")
    try:
        launch(
            args.work,
            policies=policies,
            trackers=trackers,
            host=args.host,
            port=args.port,
            num_frames=args.frames,
            auth=auth,
            allowed_dirs=args.allow_dir,
            max_upload_mb=args.max_upload_mb,
        )
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise InputError(f"cannot serve on {args.host}:{args.port}: {exc}") from exc
    return 0


def _ui_auth(given: str | None) -> tuple[str, str] | None:
    """`USER:PASSWORD` from `--auth` or `REVSEG_UI_AUTH`, checked (None when neither is set)."""
    import os

    raw = given if given is not None else os.environ.get("REVSEG_UI_AUTH")
    if raw is None:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise InputError("--auth (or REVSEG_UI_AUTH) must be USER:PASSWORD, both non-empty")
    return user, password


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "segment":
            return run_segment(args)
        if args.command == "demo":
            return run_demo(args)
        if args.command == "score":
            return run_score(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "submission":
            return run_submission(args)
        if args.command == "synth":
            return run_synth(args)
        if args.command == "train":
            return run_train(args)
        if args.command == "tiny-policy":
            from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl

            released = args.released
            print(
                build_tiny_qwen2_5_vl(
                    args.out, seed=args.seed, released_budgets=released, released_vocab=released
                )
            )
            return 0
        if args.command == "inspect-policy":
            return run_inspect_policy(args)
        if args.command == "ui":
            return run_ui(args)
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
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
