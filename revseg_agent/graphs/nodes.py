"""The graph's nodes: one explicit step of the ReVSeg chain each.

- `sample_frames`: open the video, uniformly sample the frames round 1 sees.
- `semantic_interpretation`: round 1. The policy reads the query against the sampled frames and
  answers with a keyframe id and an explicit object description (retried when it does not parse).
- `temporal_evidence_selection`: turns round 1's chosen frame id into the keyframe's index and
  timestamp in the original video (a person may correct it here before grounding).
- `spatial_grounding`: round 2. The policy sees the keyframe and boxes the described object;
  boxes are mapped from the model's resized image to the frame (retried when unusable).
- `track`: the tracker propagates the box(es) from the keyframe through the whole video.

Nodes reach the policy and tracker only through `Runtime[Context]`; they return state updates
with one trace record each.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from langgraph.runtime import Runtime

from revseg_agent.errors import (
    OUT_OF_MEMORY,
    CheckpointError,
    InputError,
    VideoError,
    is_out_of_memory,
    out_of_memory_message,
)
from revseg_agent.graphs.chats import FRAMES_REF, KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.graphs.context import Context, run_context
from revseg_agent.graphs.names import (
    SAMPLE_FRAMES,
    SEMANTIC_INTERPRETATION,
    SPATIAL_GROUNDING,
    TEMPORAL_EVIDENCE_SELECTION,
    TRACK,
)
from revseg_agent.graphs.registry import (
    check_policy_spec,
    check_tracker_spec,
    resolve_policy,
    resolve_tracker,
    spec_paths,
)
from revseg_agent.graphs.state import RevsegState
from revseg_agent.graphs.traces import StepError, StepRecord, VisualRecord
from revseg_agent.masks_io import MaskStreamWriter
from revseg_agent.parsing import (
    KeyframeAnswer,
    ParseError,
    parse_box_answer,
    parse_keyframe_answer,
    to_frame_space,
)
from revseg_agent.policies.base import (
    ChatMessage,
    Generation,
    ImageFrame,
    VideoFrames,
    box_units,
    feeds_token_ids,
)
from revseg_agent.tools.base import TrackPrompt, stream_masks
from revseg_agent.types import Box

NodeFn = TypeVar("NodeFn", bound=Callable[[RevsegState, Runtime[Context]], dict[str, Any]])
#: Error codes of bad input met inside a run (most specific first).
_BAD_INPUT_CODES: tuple[tuple[type[Exception], str], ...] = (
    (VideoError, "bad_video"),
    (CheckpointError, "bad_checkpoint"),
    (InputError, "bad_input"),
)


def _error(node: str, code: str, message: str) -> dict[str, Any]:
    return {"node": node, "code": code, "message": message}


def _record(node: str, started: float, **fields: Any) -> dict[str, Any]:
    return StepRecord(node=node, started_at=started, duration_s=time.time() - started, **fields).to_state()  # type: ignore[arg-type]


def _generation_record(
    attempt: int,
    messages: list[ChatMessage],
    visuals: dict[str, VisualRecord],
    gen: Generation,
    sizes: list[tuple[int, int]],
) -> dict[str, Any]:
    """The trace fields of one policy call (what training replays)."""
    return {
        "attempt": attempt,
        "messages": messages,
        "visuals": visuals,
        "completion": gen.text,
        "prompt_ids": gen.prompt_ids,
        "completion_ids": gen.completion_ids,
        "logprobs": gen.logprobs,
        "model_image_sizes": sizes,
    }


def _exhausted(node: str, attempt: int, error: ParseError, what: str) -> dict[str, Any]:
    return _error(node, error.code, f"{what} in {attempt} attempts (last: {error.message})")


def _round1_completion_ids(state: RevsegState) -> list[int] | None:
    """The token ids round 1 sampled for the completion in state (token-in/token-out), or None
    when there are none or a person has edited the completion since."""
    for step in reversed(state.get("steps", [])):
        if step.get("node") == SEMANTIC_INTERPRETATION:
            ids = step.get("completion_ids")
            if ids and step.get("completion") == state.get("round1_completion"):
                return list(ids)
            return None
    return None


def _frames_record(state: RevsegState) -> VisualRecord:
    return VisualRecord(
        kind="video",
        video_path=state["video_path"],
        frame_indices=list(state["sampled_indices"]),
        fps=state["fps"],
        total_num_frames=state["num_video_frames"],
    )


def _sampled_frames(state: RevsegState, ctx: Context) -> VideoFrames:
    return VideoFrames(
        frames=ctx.read_frames(state["video_path"], list(state["sampled_indices"]), fps=state["fps"]),
        frame_indices=list(state["sampled_indices"]),
        fps=state["fps"],
        total_num_frames=state["num_video_frames"],
    )


# -- nodes -------------------------------------------------------------------------------------
def _ends_on_bad_input(node_name: str) -> Callable[[NodeFn], NodeFn]:
    """Bad input met by a node (an empty query, an unreadable video, a checkpoint or spec that
    cannot be loaded) becomes the run's typed `error` in state, recorded in the trace, and the
    run ends there: in a served graph the client then reads the message in the run's state
    instead of an opaque server error."""

    def wrap(fn: NodeFn) -> NodeFn:
        @functools.wraps(fn)
        def node(state: RevsegState, runtime: Runtime[Context]) -> dict[str, Any]:
            started = time.time()
            try:
                return fn(state, runtime)
            except (InputError, VideoError, CheckpointError) as exc:
                code = next(c for kind, c in _BAD_INPUT_CODES if isinstance(exc, kind))
                err = _error(node_name, code, str(exc))
                return {"error": err, "steps": [_record(node_name, started, error=err)]}
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                # a served client reads it; the CLI exits 4 (`graphs.pipeline.result_from_state`)
                err = _error(node_name, OUT_OF_MEMORY, out_of_memory_message(node_name, exc))
                return {"error": err, "steps": [_record(node_name, started, error=err)]}

        return cast(NodeFn, node)

    return wrap


@_ends_on_bad_input(SAMPLE_FRAMES)
def sample_frames(state: RevsegState, runtime: Runtime[Context]) -> dict[str, Any]:
    started = time.time()
    ctx = run_context(runtime.context)
    if not state.get("query", "").strip():
        raise InputError("the query is empty")
    # cheap checks of specs before the first model call (a served graph's context holds specs)
    if isinstance(ctx.policy, str):
        for path in spec_paths(ctx.policy, "policy"):
            ctx.check_readable(path, "policy checkpoint")
        check_policy_spec(ctx.policy)
    if isinstance(ctx.tracker, str) and ctx.run_tracker:
        for path in spec_paths(ctx.tracker, "tracker"):
            ctx.check_readable(path, "tracker checkpoint")
        check_tracker_spec(ctx.tracker)
    video = ctx.open_video(state["video_path"])
    sample = video.sample(ctx.num_frames)
    parsed = {
        "num_video_frames": video.num_frames,
        "fps": video.info.fps,
        "sampled_indices": list(sample.indices),
    }
    return {
        "num_video_frames": video.num_frames,
        "fps": video.info.fps,
        "frame_size": [video.info.height, video.info.width],
        "sampled_indices": list(sample.indices),
        "sampled_timestamps": [round(t, 4) for t in sample.timestamps],
        "round1_attempts": 0,
        "round2_attempts": 0,
        "error": None,
        "steps": [_record(SAMPLE_FRAMES, started, parsed=parsed)],
    }


@_ends_on_bad_input(SEMANTIC_INTERPRETATION)
def semantic_interpretation(state: RevsegState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Round 1: interpret the query over the sampled frames; answer a keyframe and a description."""
    started = time.time()
    ctx = run_context(runtime.context)
    attempt = state.get("round1_attempts", 0) + 1
    messages = round1_messages(state["query"], state["sampled_timestamps"])
    visuals = {FRAMES_REF: _sampled_frames(state, ctx)}
    sampling = ctx.attempt_sampling(SEMANTIC_INTERPRETATION, state["query"], attempt)
    gen = resolve_policy(ctx.policy).generate(messages, visuals, sampling=sampling, n=1)[0]
    answer = parse_keyframe_answer(gen.text, len(state["sampled_indices"]))
    update: dict[str, Any] = {"round1_attempts": attempt, "round1_completion": gen.text}
    record = _generation_record(attempt, messages, {FRAMES_REF: _frames_record(state)}, gen, gen.video_sizes)
    if isinstance(answer, KeyframeAnswer):
        update.update(keyframe_position=answer.position, description=answer.description)
        record["parsed"] = {
            "frame_position": answer.position,
            "description": answer.description,
            "think": answer.think,
            "strict_format": answer.strict_format,
        }
    else:
        record["error"] = StepError(code=answer.code, message=answer.message)
        if attempt >= ctx.max_attempts:
            if ctx.on_parse_failure == "fallback":
                position = len(state["sampled_indices"]) // 2
                update.update(keyframe_position=position, description=state["query"].strip())
                record["fallback"] = "middle sampled frame; the query as the description"
            else:
                update["error"] = _exhausted(
                    SEMANTIC_INTERPRETATION, attempt, answer, "round 1 gave no usable answer"
                )
    update["steps"] = [_record(SEMANTIC_INTERPRETATION, started, **record)]
    return update


def temporal_evidence_selection(state: RevsegState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Map the chosen sampled frame to the keyframe's index and time in the original video."""
    started = time.time()
    position = state["keyframe_position"]
    sampled = state["sampled_indices"]
    if not 0 <= position < len(sampled):
        err = _error(
            TEMPORAL_EVIDENCE_SELECTION,
            "frame_id_out_of_range",
            f"keyframe position {position} is outside the {len(sampled)} sampled frames",
        )
        return {"error": err, "steps": [_record(TEMPORAL_EVIDENCE_SELECTION, started, error=err)]}
    index = sampled[position]
    timestamp = state["sampled_timestamps"][position]
    parsed = {"frame_position": position, "keyframe_index": index, "timestamp": timestamp}
    return {
        "keyframe_index": index,
        "keyframe_timestamp": timestamp,
        "steps": [_record(TEMPORAL_EVIDENCE_SELECTION, started, parsed=parsed)],
    }


@_ends_on_bad_input(SPATIAL_GROUNDING)
def spatial_grounding(state: RevsegState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Round 2: box the described object on the keyframe; map boxes to frame coordinates."""
    started = time.time()
    ctx = run_context(runtime.context)
    height, width = state["frame_size"]
    key = state["keyframe_index"]
    if not 0 <= key < state["num_video_frames"]:
        err = _error(
            SPATIAL_GROUNDING,
            "keyframe_out_of_range",
            f"keyframe {key} is outside the video's {state['num_video_frames']} frames",
        )
        return {"error": err, "steps": [_record(SPATIAL_GROUNDING, started, error=err)]}
    attempt = state.get("round2_attempts", 0) + 1
    keyframe = ctx.read_frames(state["video_path"], [key], fps=state["fps"])[0]
    visuals: dict[str, VideoFrames | ImageFrame] = {KEYFRAME_REF: ImageFrame(keyframe)}
    records = {KEYFRAME_REF: VisualRecord(kind="image", video_path=state["video_path"], frame_indices=[key])}
    policy = resolve_policy(ctx.policy)
    if ctx.round2_with_history and state.get("round1_completion") is not None:
        messages = round2_messages(
            state["description"],
            round1=round1_messages(state["query"], state["sampled_timestamps"]),
            round1_answer=state["round1_completion"],
            round1_answer_ids=_round1_completion_ids(state) if feeds_token_ids(policy) else None,
        )
        visuals[FRAMES_REF] = _sampled_frames(state, ctx)
        records[FRAMES_REF] = _frames_record(state)
    else:
        messages = round2_messages(state["description"])
    prompt_key = f"{state['query']}\0{state['description']}\0{state.get('round1_completion')}"
    sampling = ctx.attempt_sampling(SPATIAL_GROUNDING, prompt_key, attempt)
    gen = policy.generate(messages, visuals, sampling=sampling, n=1)[0]
    model_size = tuple(gen.image_sizes[-1]) if gen.image_sizes else (height, width)
    answer = parse_box_answer(gen.text, units=box_units(policy))
    boxes: tuple[Box, ...] | ParseError = (
        to_frame_space(answer, model_size=model_size, frame_size=(height, width))  # type: ignore[arg-type]
        if not isinstance(answer, ParseError)
        else answer
    )
    update: dict[str, Any] = {"round2_attempts": attempt, **_keyframe_derived(state)}
    record = _generation_record(attempt, messages, records, gen, gen.image_sizes)
    if isinstance(boxes, ParseError):
        record["error"] = StepError(code=boxes.code, message=boxes.message)
        if attempt >= ctx.max_attempts:
            if ctx.on_parse_failure == "fallback":
                update["boxes"] = [Box.centre(height, width).to_list()]
                record["fallback"] = "centre box covering the middle half of the keyframe"
            else:
                update["error"] = _exhausted(SPATIAL_GROUNDING, attempt, boxes, "round 2 gave no usable box")
    else:
        update["boxes"] = [b.to_list() for b in boxes]
        record["parsed"] = {
            "boxes": update["boxes"],
            "model_boxes": [b.to_list() for b in answer.boxes],  # type: ignore[union-attr]
            "model_size": list(model_size),
            "strict_format": answer.strict_format,  # type: ignore[union-attr]
        }
    update["steps"] = [_record(SPATIAL_GROUNDING, started, **record)]
    return update


def _keyframe_derived(state: RevsegState) -> dict[str, Any]:
    """The keyframe's time and sampled position recomputed from its index, where they differ
    from state (a person edited `keyframe_index` between nodes)."""
    key = state["keyframe_index"]
    sampled = list(state.get("sampled_indices", []))
    derived = {
        "keyframe_timestamp": round(key / state["fps"], 4),
        "keyframe_position": sampled.index(key) if key in sampled else None,
    }
    return {k: v for k, v in derived.items() if state.get(k) != v}


def _validate_boxes(raw: Any, height: int, width: int) -> list[Box] | str:
    try:
        boxes = [Box.from_list(b) for b in raw]
    except (TypeError, ValueError) as exc:
        return f"boxes must be lists of 4 numbers: {exc}"
    if not boxes:
        return "no box to track"
    for b in boxes:
        clipped = b.clip(width, height)
        if b.is_degenerate() or clipped.is_degenerate():
            return f"box {b.to_list()} is degenerate or outside the {width}x{height} frame"
    return [b.clip(width, height) for b in boxes]


def track_prompt(state: RevsegState, started: float) -> TrackPrompt | dict[str, Any]:
    """What the track step propagates (the keyframe and its validated boxes), or the step's
    error update when the boxes are unusable."""
    height, width = state["frame_size"]
    boxes = _validate_boxes(state.get("boxes"), height, width)
    if isinstance(boxes, str):
        err = _error(TRACK, "box_invalid", boxes)
        return {"error": err, "steps": [_record(TRACK, started, error=err)]}
    return TrackPrompt(state["keyframe_index"], tuple(boxes))


def tracked(
    state: RevsegState,
    ctx: Context,
    prompt: TrackPrompt,
    tracker: str,
    writer: MaskStreamWriter,
    started: float,
) -> dict[str, Any]:
    """The track step's update once `writer` holds every frame's masks: the masks file in the
    run's artifacts and the step's record. Shared by the node and by runs that track several
    queries of one video in one pass (`graphs.video_queries`)."""
    key = json.dumps([state["video_path"], state["keyframe_index"], state["boxes"], tracker])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = writer.write_json(
        ctx.artifacts() / f"masks-{digest}.json",
        video_path=state["video_path"],
        keyframe_index=state["keyframe_index"],
        boxes=[b.to_list() for b in prompt.boxes],
        tracker=tracker,
    )
    parsed = {
        "tracker": tracker,
        "frames": writer.num_frames,
        "empty_frames": int(writer.empty_frames),
        "mean_area_ratio": round(writer.area_sum / writer.num_frames, 6),
    }
    return {"masks_path": str(path), "steps": [_record(TRACK, started, parsed=parsed)]}


@_ends_on_bad_input(TRACK)
def track(state: RevsegState, runtime: Runtime[Context]) -> dict[str, Any]:
    """Propagate the keyframe box(es) through the whole video with the tracker."""
    started = time.time()
    ctx = run_context(runtime.context)
    prompt = track_prompt(state, started)
    if not isinstance(prompt, TrackPrompt):
        return prompt
    if not ctx.run_tracker:
        return {"steps": [_record(TRACK, started, parsed={"skipped": True})]}
    tracker = resolve_tracker(ctx.tracker)
    video = ctx.open_video(state["video_path"], fps=state["fps"])
    # masks are encoded as the tracker yields them: a long video's masks are never held whole
    writer = MaskStreamWriter(video.num_frames, video.info.height, video.info.width)
    for frame in stream_masks(
        tracker, video, frame_index=prompt.frame_index, boxes=prompt.boxes, progress=ctx.track_progress
    ):
        writer.add(frame)
    return tracked(state, ctx, prompt, tracker.name, writer, started)
