"""The reasoning graph with a scripted policy and a fake tracker: exact node-by-node streams."""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from revseg_agent.errors import PipelineFailure
from revseg_agent.graphs.context import RETRY_SAMPLING, Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.names import NODES, SPATIAL_GROUNDING, TEMPORAL_EVIDENCE_SELECTION, TRACK
from revseg_agent.graphs.pipeline import result_from_state, segment, trace_from_state
from revseg_agent.graphs.traces import Trace
from revseg_agent.masks_io import read_masks_json
from revseg_agent.policies.base import SamplingParams, TextPart, VisualPart
from revseg_agent.testing import BoxTracker, ScriptedPolicy

ROUND1_OK = (
    "<think>The square moves right.</think><answer>frame id: 3\nobject description: the red square</answer>"
)
ROUND2_OK = '```json\n[{"bbox_2d": [36, 100, 76, 140], "label": "the red square"}]\n```'
SAMPLED = [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23]
TIMES = [round(i / 12, 4) for i in SAMPLED]
START = {
    "num_video_frames": 24,
    "fps": 12.0,
    "frame_size": [240, 320],
    "sampled_indices": SAMPLED,
    "sampled_timestamps": TIMES,
    "round1_attempts": 0,
    "round2_attempts": 0,
    "error": None,
}


def _stream(
    policy: ScriptedPolicy, video: Path, tmp_path: Path, **ctx: Any
) -> list[tuple[str, dict[str, Any]]]:
    """Run the graph and return `[(node, update without steps)]`, with the masks path normalised."""
    context = Context(policy=policy, tracker=BoxTracker(), artifacts_dir=tmp_path, **ctx)
    out = []
    for update in build_graph().stream(
        {"video_path": str(video), "query": "the thing that moves right"},
        context=context,
        stream_mode="updates",
    ):
        ((node, values),) = update.items()
        values = {k: v for k, v in values.items() if k != "steps"}
        if "masks_path" in values:
            assert Path(values["masks_path"]).parent == tmp_path
            values["masks_path"] = "<masks>"
        out.append((node, values))
    return out


def test_happy_path_stream(demo_clip: Path, tmp_path: Path) -> None:
    policy = ScriptedPolicy([ROUND1_OK, ROUND2_OK])
    assert _stream(policy, demo_clip, tmp_path) == [
        ("sample_frames", START),
        (
            "semantic_interpretation",
            {
                "round1_attempts": 1,
                "round1_completion": ROUND1_OK,
                "keyframe_position": 2,
                "description": "the red square",
            },
        ),
        ("temporal_evidence_selection", {"keyframe_index": 3, "keyframe_timestamp": 0.25}),
        ("spatial_grounding", {"round2_attempts": 1, "boxes": [[36.0, 100.0, 76.0, 140.0]]}),
        ("track", {"masks_path": "<masks>"}),
    ]
    # Round 1 sees the sampled frames as one video; round 2 continues the conversation with the keyframe.
    first, second = policy.calls
    assert first.visual_refs == ["frames"]
    assert [type(p) for p in first.messages[1].content] == [VisualPart, TextPart]
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "user"]
    assert second.messages[2].content[0] == TextPart(text=ROUND1_OK)
    assert second.messages[3].content[1] == TextPart(text="Detect the red square with bbox coordinates.")
    assert sorted(second.visual_refs) == ["frames", "keyframe"]


def test_round2_without_history(demo_clip: Path, tmp_path: Path) -> None:
    policy = ScriptedPolicy([ROUND1_OK, ROUND2_OK])
    _stream(policy, demo_clip, tmp_path, round2_with_history=False)
    assert [m.role for m in policy.calls[1].messages] == ["system", "user"]
    assert policy.calls[1].visual_refs == ["keyframe"]


def test_retry_path_uses_retry_sampling(demo_clip: Path, tmp_path: Path) -> None:
    policy = ScriptedPolicy(["I think it is the square.", ROUND1_OK, "bbox: [0, 0, 0, 0]", ROUND2_OK])
    stream = _stream(policy, demo_clip, tmp_path)
    assert [node for node, _ in stream] == [
        "sample_frames",
        "semantic_interpretation",
        "semantic_interpretation",
        "temporal_evidence_selection",
        "spatial_grounding",
        "spatial_grounding",
        "track",
    ]
    assert stream[1][1] == {"round1_attempts": 1, "round1_completion": "I think it is the square."}
    assert stream[4][1] == {"round2_attempts": 1}
    first, retry1, first2, retry2 = [c.sampling for c in policy.calls]
    assert first == first2 == Context(policy, BoxTracker()).sampling
    for retry in (retry1, retry2):  # the retry settings, seeded from what the retry asks
        assert retry.seed is not None and dataclasses.replace(retry, seed=None) == RETRY_SAMPLING
    assert retry1.seed != retry2.seed


def test_retry_seeds_follow_the_prompt_and_attempt_only() -> None:
    context = Context(ScriptedPolicy([]), BoxTracker())

    def seed(node: str, key: str, attempt: int, ctx: Context = context) -> int | None:
        return ctx.attempt_sampling(node, key, attempt).seed

    assert context.attempt_sampling("semantic_interpretation", "q", 1) == context.sampling
    assert seed("semantic_interpretation", "q", 2) == seed("semantic_interpretation", "q", 2)
    others = [
        ("semantic_interpretation", "q", 3),
        ("semantic_interpretation", "r", 2),
        ("spatial_grounding", "q", 2),
    ]
    assert seed("semantic_interpretation", "q", 2) not in {seed(*o) for o in others}
    seeded = dataclasses.replace(RETRY_SAMPLING, seed=7)
    own = Context(ScriptedPolicy([]), BoxTracker(), retry_sampling=seeded)
    assert seed("semantic_interpretation", "q", 2, own) != seed("semantic_interpretation", "q", 2)
    greedy = Context(ScriptedPolicy([]), BoxTracker(), retry_sampling=SamplingParams())
    assert greedy.attempt_sampling("spatial_grounding", "q", 2) == SamplingParams()  # stays unseeded


def test_failure_path_records_typed_error(demo_clip: Path, tmp_path: Path) -> None:
    policy = ScriptedPolicy(["nothing"] * 3)
    context = Context(policy=policy, tracker=BoxTracker(), artifacts_dir=tmp_path, max_attempts=3)
    state = build_graph().invoke({"video_path": str(demo_clip), "query": "the square"}, context=context)
    assert state["error"] == {
        "node": "semantic_interpretation",
        "code": "no_answer",
        "message": "round 1 gave no usable answer in 3 attempts "
        "(last: round 1 has no <answer>...</answer> block)",
    }
    assert "masks_path" not in state and len(policy.calls) == 3
    trace = trace_from_state(state, context)
    assert [(s.node, s.attempt, s.error.code if s.error else None) for s in trace.steps] == [
        ("sample_frames", 1, None),
        ("semantic_interpretation", 1, "no_answer"),
        ("semantic_interpretation", 2, "no_answer"),
        ("semantic_interpretation", 3, "no_answer"),
    ]
    assert not trace.ok and trace.error_node == "semantic_interpretation"
    with pytest.raises(PipelineFailure) as failure:
        result_from_state(state, context)
    assert failure.value.code == "no_answer"


def test_round2_failure_path(demo_clip: Path, tmp_path: Path) -> None:
    policy = ScriptedPolicy([ROUND1_OK, "bbox: [400, 300, 500, 400]", "nope"])
    stream = _stream(policy, demo_clip, tmp_path, max_attempts=2)
    assert stream[-1] == (
        "spatial_grounding",
        {
            "round2_attempts": 2,
            "error": {
                "node": "spatial_grounding",
                "code": "no_box",
                "message": "round 2 gave no usable box in 2 attempts "
                '(last: round 2 has no box (expected [{"bbox_2d": [x1, y1, x2, y2], ...}]))',
            },
        },
    )


def test_fallback_path_is_recorded(demo_clip: Path, tmp_path: Path) -> None:
    policy = ScriptedPolicy(["x", "y"])
    context = Context(
        policy=policy,
        tracker=BoxTracker(),
        artifacts_dir=tmp_path,
        max_attempts=1,
        on_parse_failure="fallback",
    )
    result = segment(demo_clip, "the square", context)
    assert result.trace.result.keyframe_index == SAMPLED[8]
    assert result.trace.result.description == "the square"
    assert result.trace.result.boxes == [[80.0, 60.0, 240.0, 180.0]]
    assert [s.fallback for s in result.trace.steps if s.fallback] == [
        "middle sampled frame; the query as the description",
        "centre box covering the middle half of the keyframe",
    ]
    assert result.masks.masks[:, 60:180, 80:240].all()


def test_interrupt_edit_resume(demo_clip: Path, tmp_path: Path) -> None:
    """A person stops before grounding, corrects the keyframe, stops before tracking, corrects the box."""
    policy = ScriptedPolicy([ROUND1_OK, ROUND2_OK])
    tracker = BoxTracker()
    context = Context(policy=policy, tracker=tracker, artifacts_dir=tmp_path)
    graph = build_graph(checkpointer=InMemorySaver(), interrupt_before=[SPATIAL_GROUNDING, TRACK])
    config: dict[str, Any] = {"configurable": {"thread_id": "t1"}}
    first = [
        next(iter(u))
        for u in graph.stream(
            {"video_path": str(demo_clip), "query": "the square"},
            config,
            context=context,
            stream_mode="updates",
        )
    ]
    assert first == [
        "sample_frames",
        "semantic_interpretation",
        "temporal_evidence_selection",
        "__interrupt__",
    ]
    snapshot = graph.get_state(config)
    assert snapshot.next == (SPATIAL_GROUNDING,)
    assert snapshot.values["keyframe_index"] == 3

    graph.update_state(config, {"keyframe_index": 20, "description": "the red block"})
    second = [next(iter(u)) for u in graph.stream(None, config, context=context, stream_mode="updates")]
    assert second == ["spatial_grounding", "__interrupt__"]
    assert policy.calls[1].messages[-1].content[1] == TextPart(
        text="Detect the red block with bbox coordinates."
    )
    edited = graph.get_state(config).values  # derived from the edited index, not stale
    assert edited["keyframe_timestamp"] == round(20 / edited["fps"], 4)
    position = edited["sampled_indices"].index(20) if 20 in edited["sampled_indices"] else None
    assert edited["keyframe_position"] == position

    graph.update_state(config, {"boxes": [[180, 100, 220, 140]]})
    third = [next(iter(u)) for u in graph.stream(None, config, context=context, stream_mode="updates")]
    assert third == ["track"]
    assert tracker.calls[0][0] == 20
    assert [b.to_list() for b in tracker.calls[0][1]] == [[180, 100, 220, 140]]
    state = graph.get_state(config).values
    masks = read_masks_json(state["masks_path"]).masks
    assert masks.shape == (24, 240, 320) and masks[:, 100:140, 180:220].all()
    assert len(policy.calls) == 2  # resuming never re-ran a model call


def test_edited_state_is_validated(demo_clip: Path, tmp_path: Path) -> None:
    context = Context(
        policy=ScriptedPolicy([ROUND1_OK, ROUND2_OK]), tracker=BoxTracker(), artifacts_dir=tmp_path
    )
    graph = build_graph(checkpointer=InMemorySaver(), interrupt_before=[TRACK])
    config: dict[str, Any] = {"configurable": {"thread_id": "t2"}}
    list(graph.stream({"video_path": str(demo_clip), "query": "q"}, config, context=context))
    graph.update_state(config, {"boxes": [[5, 5, 5, 90]]})
    list(graph.stream(None, config, context=context))
    assert graph.get_state(config).values["error"]["code"] == "box_invalid"


def test_sqlite_checkpointer_resumes_in_a_new_graph(demo_clip: Path, tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    db = tmp_path / "runs.sqlite"
    context = Context(
        policy=ScriptedPolicy([ROUND1_OK, ROUND2_OK]), tracker=BoxTracker(), artifacts_dir=tmp_path
    )
    config: dict[str, Any] = {"configurable": {"thread_id": "run-7"}}
    with sqlite3.connect(db, check_same_thread=False) as conn:
        graph = build_graph(checkpointer=SqliteSaver(conn), interrupt_before=[TEMPORAL_EVIDENCE_SELECTION])
        list(graph.stream({"video_path": str(demo_clip), "query": "q"}, config, context=context))
    with sqlite3.connect(db, check_same_thread=False) as conn:
        graph = build_graph(checkpointer=SqliteSaver(conn))
        assert graph.get_state(config).next == (TEMPORAL_EVIDENCE_SELECTION,)
        state = graph.invoke(None, config, context=context)
    trace = trace_from_state(state, context)
    assert trace.ok and [s.node for s in trace.steps] == list(NODES)


def test_trace_round_trips_through_json(demo_clip: Path, tmp_path: Path) -> None:
    context = Context(
        policy=ScriptedPolicy([ROUND1_OK, ROUND2_OK]), tracker=BoxTracker(), artifacts_dir=tmp_path
    )
    result = segment(demo_clip, "the square", context)
    path = result.trace.save(tmp_path / "trace.json")
    loaded = Trace.load(path)
    assert loaded == result.trace
    round1 = loaded.steps[1]
    assert round1.visuals["frames"].frame_indices == SAMPLED
    assert round1.completion_ids and len(round1.logprobs) == len(round1.completion_ids)
    assert round1.parsed is not None and round1.parsed["think"] == "The square moves right."
    assert "pixels" not in path.read_text()


@pytest.mark.parametrize(
    ("case", "node", "code", "message"),
    [
        ("empty_query", "sample_frames", "bad_input", "the query is empty"),
        ("missing_video", "sample_frames", "bad_video", "video not found"),
        ("not_a_video", "sample_frames", "bad_video", "not a readable video"),
        ("unknown_tracker", "sample_frames", "bad_input", "unknown tracker spec 'magic'"),
        ("missing_policy", "sample_frames", "bad_checkpoint", "policy checkpoint folder does not exist"),
    ],
)
def test_bad_input_ends_the_run_with_a_typed_error(
    case: str, node: str, code: str, message: str, demo_clip: Path, tmp_path: Path
) -> None:
    """Bad input is the run's error in state (a served graph's client reads it there), before
    any model is asked: the run stops at the node that met it."""
    policy: Any = ScriptedPolicy([])
    tracker: Any = BoxTracker()
    video, query = str(demo_clip), "the red square"
    if case == "empty_query":
        query = "  "
    elif case == "missing_video":
        video = str(tmp_path / "nope.mp4")
    elif case == "not_a_video":
        (tmp_path / "notes.mp4").write_text("not a video")
        video = str(tmp_path / "notes.mp4")
    elif case == "unknown_tracker":
        tracker = "magic"
    elif case == "missing_policy":
        policy = str(tmp_path / "no" / "such" / "policy")
    context = Context(policy=policy, tracker=tracker, artifacts_dir=tmp_path)
    stream = list(
        build_graph().stream({"video_path": video, "query": query}, context=context, stream_mode="updates")
    )
    assert [next(iter(update)) for update in stream] == [node]
    state = build_graph().invoke({"video_path": video, "query": query}, context=context)
    assert state["error"]["node"] == node and state["error"]["code"] == code
    assert message in state["error"]["message"]
    assert isinstance(policy, str) or policy.calls == []  # no model was asked


def test_multi_object_boxes_are_unioned(demo_clip: Path, tmp_path: Path) -> None:
    policy = ScriptedPolicy([ROUND1_OK, "bbox: [10, 10, 30, 30]\nbbox: [100, 100, 120, 130]"])
    result = segment(
        demo_clip, "both things", Context(policy=policy, tracker=BoxTracker(), artifacts_dir=tmp_path)
    )
    assert result.trace.result.boxes == [[10.0, 10.0, 30.0, 30.0], [100.0, 100.0, 120.0, 130.0]]
    assert int(result.masks.masks[0].sum()) == 20 * 20 + 20 * 30
    assert np.array_equal(result.masks.masks[0], result.masks.masks[-1])


def test_edited_keyframe_out_of_range_is_a_typed_error(demo_clip: Path, tmp_path: Path) -> None:
    context = Context(
        policy=ScriptedPolicy([ROUND1_OK, ROUND2_OK]), tracker=BoxTracker(), artifacts_dir=tmp_path
    )
    graph = build_graph(checkpointer=InMemorySaver(), interrupt_before=[SPATIAL_GROUNDING])
    config: dict[str, Any] = {"configurable": {"thread_id": "t3"}}
    list(graph.stream({"video_path": str(demo_clip), "query": "q"}, config, context=context))
    graph.update_state(config, {"keyframe_index": 999})
    list(graph.stream(None, config, context=context))
    error = graph.get_state(config).values["error"]
    assert (error["node"], error["code"]) == ("spatial_grounding", "keyframe_out_of_range")


def test_served_graph_takes_specs_as_context(demo_clip: Path, tiny_policy_dir: Path, tmp_path: Path) -> None:
    """What `langgraph dev` does: import the graph named in langgraph.json, pass the context as JSON."""
    import importlib
    import json

    spec = json.loads((Path(__file__).parents[1] / "langgraph.json").read_text())["graphs"]["revseg"]
    module_path, _, attribute = spec.partition(":")
    module = importlib.import_module(module_path.removeprefix("./").removesuffix(".py").replace("/", "."))
    served = getattr(module, attribute)
    context = {
        "policy": str(tiny_policy_dir),
        "tracker": "classical",
        "max_attempts": 1,
        "on_parse_failure": "fallback",
        "artifacts_dir": str(tmp_path),
        "sampling": {"max_new_tokens": 8},
    }
    updates = list(
        served.stream(
            {"video_path": str(demo_clip), "query": "the red square"}, context=context, stream_mode="updates"
        )
    )
    assert [next(iter(u)) for u in updates] == [*NODES, "respond"]
    out = served.invoke({"video_path": str(demo_clip), "query": "the red square"}, context=context)
    # the output is what a remote client needs, not the whole state
    assert set(out) == {
        "description",
        "keyframe_index",
        "keyframe_timestamp",
        "boxes",
        "masks",
        "trace_summary",
        "error",
    }
    assert out["error"] is None and len(out["masks"]) == 24
    from revseg_agent.masks_io import decode_rle

    assert decode_rle(out["masks"][out["keyframe_index"]]).shape == (240, 320)
    assert "[track#1]" in out["trace_summary"]
    with_trace = served.invoke(
        {"video_path": str(demo_clip), "query": "the red square"}, context={**context, "include_trace": True}
    )
    assert [s["node"] for s in with_trace["trace"]["steps"]] == list(NODES)


def test_a_run_opens_the_video_once_and_decodes_each_frame_once(
    demo_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries of both rounds re-read the sampled frames and the keyframe: from the context's
    frame cache, not the file."""
    from revseg_agent import video as video_module

    opened: list[str] = []
    real_init = video_module.Video.__init__

    def counting_init(self: Any, path: Any, **kwargs: Any) -> None:
        opened.append(str(path))
        real_init(self, path, **kwargs)

    monkeypatch.setattr(video_module.Video, "__init__", counting_init)
    policy = ScriptedPolicy(["no answer", ROUND1_OK, "no box", ROUND2_OK])
    context = Context(policy=policy, tracker=BoxTracker(), num_frames=8, artifacts_dir=tmp_path)
    state = build_graph().invoke({"video_path": str(demo_clip), "query": "the red square"}, context=context)
    assert state["error"] is None and state["round1_attempts"] == 2 and state["round2_attempts"] == 2
    assert opened == [str(demo_clip)]
    assert context.frame_cache is not None
    assert context.frame_cache.decoded == len(set(state["sampled_indices"]) | {state["keyframe_index"]})


EDIT_STATE = {"num_video_frames": 24, "frame_size": [240, 320]}


@dataclass(frozen=True)
class Refused:
    message: str


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("keyframe_index", 23, 23),
        ("keyframe_index", 4.0, 4),
        ("keyframe_index", 24, Refused("outside the video's 24 frames")),
        ("keyframe_index", -1, Refused("outside")),
        ("keyframe_index", "5", Refused("must be a frame number")),
        ("keyframe_index", True, Refused("must be a frame number")),
        ("description", "  the red block ", "the red block"),
        ("description", "   ", Refused("description is empty")),
        ("boxes", [[10, 20, 100, 120]], [[10.0, 20.0, 100.0, 120.0]]),
        ("boxes", [[0, 0, 320, 240], [1, 1, 5, 5]], [[0.0, 0.0, 320.0, 240.0], [1.0, 1.0, 5.0, 5.0]]),
        ("boxes", [[300, 20, 330, 120]], Refused("outside the 320x240 frame")),
        ("boxes", [[10, 20, 10, 120]], Refused("empty or outside")),
        ("boxes", [[10, 20, 100]], Refused("4 numbers")),
        ("boxes", [], Refused("no box")),
        ("query", "other", Refused("cannot be edited")),
    ],
)
def test_human_edits_are_checked_against_the_run(key: str, value: Any, expected: Any) -> None:
    from revseg_agent.errors import InputError
    from revseg_agent.graphs.edits import check_edit

    if isinstance(expected, Refused):
        with pytest.raises(InputError, match=expected.message):
            check_edit(EDIT_STATE, key, value)
    else:
        assert check_edit(EDIT_STATE, key, value) == expected


def test_applied_edits_are_recorded_in_the_trace(demo_clip: Path, tmp_path: Path) -> None:
    from revseg_agent.errors import InputError
    from revseg_agent.graphs.edits import apply_edit
    from revseg_agent.graphs.traces import Trace

    context = Context(
        policy=ScriptedPolicy([ROUND1_OK, ROUND2_OK]), tracker=BoxTracker(), artifacts_dir=tmp_path
    )
    graph = build_graph(checkpointer=InMemorySaver(), interrupt_before=[SPATIAL_GROUNDING, TRACK])
    config: dict[str, Any] = {"configurable": {"thread_id": "edits"}}
    list(graph.stream({"video_path": str(demo_clip), "query": "q"}, config, context=context))
    apply_edit(graph, config, "keyframe_index", 20)
    with pytest.raises(InputError, match="outside"):
        apply_edit(graph, config, "keyframe_index", 99)  # refused: nothing recorded
    list(graph.stream(None, config, context=context))
    apply_edit(graph, config, "boxes", [[180, 100, 220, 140]])
    list(graph.stream(None, config, context=context))
    state = graph.get_state(config).values
    trace = Trace.from_state(state, policy="scripted", tracker="box")
    assert [(e.key, e.old, e.new, e.before) for e in trace.human_edits] == [
        ("keyframe_index", 3, 20, ["spatial_grounding"]),
        ("boxes", [[36.0, 100.0, 76.0, 140.0]], [[180.0, 100.0, 220.0, 140.0]], ["track"]),
    ]
    assert "edited by person: keyframe_index 3 -> 20" in trace.summary()
    assert trace.result.keyframe_index == 20 and trace.ok
