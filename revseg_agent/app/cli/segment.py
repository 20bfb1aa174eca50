"""`revseg segment`: one video and query through the chain, with `--step` to pause after each node."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any

from revseg_agent.app.cli.common import EXIT_CHAIN_FAILED, add_segment_options, run_settings
from revseg_agent.errors import InputError, PipelineFailure
from revseg_agent.graphs.context import Context, RunSettings
from revseg_agent.graphs.registry import check_device, check_tracker_spec, load_policy, load_tracker
from revseg_agent.io import check_replaceable
from revseg_agent.video import open_video


def add_commands(sub: Any) -> None:
    """segment"""
    seg = sub.add_parser("segment", help="segment the object a query refers to, on every frame")
    seg.add_argument("video", help="video file (mp4, avi, ...) or folder of frames")
    seg.add_argument("query", help="what to segment, e.g. 'the dog that jumps last'")
    seg.add_argument("--out", required=True, type=Path, help="output folder")
    seg.add_argument(
        "--step", action="store_true", help="pause after each node; show and optionally edit state"
    )
    add_segment_options(seg)

    seg.set_defaults(run=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from revseg_agent.app.outputs import write_outputs
    from revseg_agent.app.step_editor import prompt_edit, show_update
    from revseg_agent.graphs.graph import build_graph
    from revseg_agent.graphs.names import NODES
    from revseg_agent.graphs.pipeline import result_from_state

    if not args.query.strip():
        raise InputError("the query is empty")
    if args.frames < 1:
        raise InputError(f"--frames must be at least 1, got {args.frames}")
    check_replaceable(args.out, overwrite=args.overwrite)
    video = open_video(args.video)
    settings = RunSettings(**run_settings(args))
    check_tracker_spec(settings.tracker)  # cheap checks before the policy loads
    check_device(settings.device)
    policy = load_policy(settings.policy, device=settings.device)
    tracker = load_tracker(settings.tracker, settings.device, settings.sam2_image_size)

    bar: dict[str, Any] = {}

    def progress(n: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(
                total=tracker.work_units(video), desc=f"tracking ({tracker.name})", unit="frame"
            )
        bar["bar"].update(n)

    context = Context(policy, tracker, track_progress=progress, **settings.chain_settings())
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
        from revseg_agent.graphs.pipeline import trace_from_state

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
