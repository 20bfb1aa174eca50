"""Parsing model text into typed results: the only place it happens."""

from __future__ import annotations

import pytest

from revseg_agent.parsing import (
    BoxAnswer,
    KeyframeAnswer,
    ParseError,
    format_box_answer,
    format_keyframe_answer,
    parse_box_answer,
    parse_keyframe_answer,
    to_frame_space,
)
from revseg_agent.types import Box

ROUND1_CASES = [
    # text, num_frames, expected (position, description, strict) or error code
    (
        "<think>the van moves</think><answer>frame id: 2\nobject description: the silver minivan</answer>",
        16,
        (1, "the silver minivan", True),
    ),
    (
        "<think>x</think>\n<answer>\nframe id: 16\nobject description: dog on the left\n</answer>",
        16,
        (15, "dog on the left", True),
    ),
    ("<answer>Frame ID: 1\nObject Description: a cat</answer>", 16, (0, "a cat", False)),
    # strict is no stricter than the lenient fields on case and spacing
    ("<think>t</think><answer>Frame ID: 3\nObject Description: a cat</answer>", 16, (2, "a cat", True)),
    ("<think>t</think><answer>frame id = 3\nobject description:a cat</answer>", 16, (2, "a cat", True)),
    (
        "<think>a</think><answer>frame id:3\nobject description: the man</answer> trailing",
        8,
        (2, "the man", False),
    ),
    ("no tags at all", 16, "no_answer"),
    ("<think>a</think><answer>object description: cat</answer>", 16, "no_frame_id"),
    ("<think>a</think><answer>frame id: 0\nobject description: cat</answer>", 16, "frame_id_out_of_range"),
    ("<think>a</think><answer>frame id: 17\nobject description: cat</answer>", 16, "frame_id_out_of_range"),
    ("<think>a</think><answer>frame id: 4\nobject description:   </answer>", 16, "no_description"),
    ("<think>a</think><answer>frame id: 4</answer>", 16, "no_description"),
]


@pytest.mark.parametrize(("text", "num_frames", "expected"), ROUND1_CASES)
def test_parse_keyframe_answer(text: str, num_frames: int, expected: object) -> None:
    result = parse_keyframe_answer(text, num_frames)
    if isinstance(expected, str):
        assert isinstance(result, ParseError)
        assert result.code == expected
    else:
        assert isinstance(result, KeyframeAnswer)
        assert (result.position, result.description, result.strict_format) == expected


CANONICAL = '```json\n[\n\t{"bbox_2d": [10, 20, 110, 220], "label": "the dog"}\n]\n```'
ROUND2_CASES = [
    # text, boxes, strict, space
    # The released model's native answer to "Detect X with bbox coordinates." is the canonical form.
    (CANONICAL, [(10, 20, 110, 220)], True, "pixels"),
    (
        '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "dog"}, '
        '{"bbox_2d": [5, 5, 9.5, 9], "label": "cat"}]\n```',
        [(1, 2, 30, 40), (5, 5, 9.5, 9)],
        True,
        "pixels",
    ),
    ('  ```json\n[{"label": "dog", "bbox_2d": [1, 2, 30, 40]}]```\n', [(1, 2, 30, 40)], True, "pixels"),
    # JSON without the fence, with text around it, or with extra keys: parsed, not canonical
    ('[{"bbox_2d": [1, 2, 30, 40], "label": "dog"}]', [(1, 2, 30, 40)], False, "pixels"),
    ('Here: ```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "dog"}]\n```', [(1, 2, 30, 40)], False, "pixels"),
    ('```json\n[{"bbox_2d": [1, 2, 30, 40]}]\n```', [(1, 2, 30, 40)], False, "pixels"),
    (
        '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "d", "score": 1}]\n```',
        [(1, 2, 30, 40)],
        False,
        "pixels",
    ),
    # the older `bbox: [...]` form and bare lists are read leniently
    ("bbox: [10, 20, 110, 220]", [(10, 20, 110, 220)], False, "pixels"),
    ("bbox: [10.5, 20, 110, 220.25]", [(10.5, 20, 110, 220.25)], False, "pixels"),
    ("bbox: [1, 2, 3, 4]\nbbox: [5, 6, 7, 8]", [(1, 2, 3, 4), (5, 6, 7, 8)], False, "pixels"),
    ("The dog is at [1, 2, 30, 40].", [(1, 2, 30, 40)], False, "pixels"),
    # box tokens: Qwen2.5-VL writes its resized input's pixels in this form too
    (
        "<|object_ref_start|>the dog<|object_ref_end|><|box_start|>(100,200),(500,750)<|box_end|>",
        [(100, 200, 500, 750)],
        False,
        "pixels",
    ),
    ('```json\n[{"bbox_2d": [1, 2, 3], "label": "dog"}]\n```', None, False, "pixels"),
    ("bbox: [1, 2, 3]", None, False, "pixels"),
    ("no box here", None, False, "pixels"),
]


@pytest.mark.parametrize(("text", "boxes", "strict", "space"), ROUND2_CASES)
def test_parse_box_answer(text: str, boxes: list[tuple[float, ...]] | None, strict: bool, space: str) -> None:
    result = parse_box_answer(text)
    if boxes is None:
        assert isinstance(result, ParseError)
        assert result.code == "no_box"
    else:
        assert isinstance(result, BoxAnswer)
        assert [b.to_list() for b in result.boxes] == [list(map(float, b)) for b in boxes]
        assert result.strict_format is strict
        assert result.space == space


def test_canonical_answers_round_trip() -> None:
    text = format_box_answer([Box(1.4, 2.6, 30.2, 40.0), Box(5, 5, 9, 9)], 'the "red" square')
    answer = parse_box_answer(text)
    assert isinstance(answer, BoxAnswer) and answer.strict_format
    assert [b.to_list() for b in answer.boxes] == [[1, 3, 30, 40], [5, 5, 9, 9]]
    keyframe = parse_keyframe_answer(format_keyframe_answer("because", 4, "the cat"), 16)
    assert isinstance(keyframe, KeyframeAnswer) and keyframe.strict_format
    assert (keyframe.position, keyframe.description, keyframe.think) == (4, "the cat", "because")


def test_relative_boxes_map_from_1000_units() -> None:
    answer = parse_box_answer("<|box_start|>(250,500),(750,1000)<|box_end|>", units="relative")  # Qwen2-VL
    assert isinstance(answer, BoxAnswer)
    # the model size does not matter for relative units
    result = to_frame_space(answer, model_size=(28, 28), frame_size=(480, 640))
    assert isinstance(result, tuple)
    assert result[0].to_list() == pytest.approx([160.0, 240.0, 480.0, 480.0])


def _answer(*boxes: tuple[float, float, float, float]) -> BoxAnswer:
    return BoxAnswer(tuple(Box(*b) for b in boxes), strict_format=True)


@pytest.mark.parametrize(
    ("boxes", "model_size", "frame_size", "expected"),
    [
        # Model saw 476x840 (multiples of 28) of an 480x854 frame: scale each axis separately.
        ([(84, 119, 420, 357)], (476, 840), (480, 854), [(85.4, 120.0, 427.0, 360.0)]),
        # Same size: unchanged.
        ([(1, 2, 30, 40)], (240, 320), (240, 320), [(1, 2, 30, 40)]),
        # Partly outside: clipped to the frame.
        ([(-10, -5, 50, 300)], (240, 320), (240, 320), [(0, 0, 50, 240)]),
        # Corners given in the wrong order: inverted boxes are rejected, not silently flipped.
        ([(50, 60, 10, 20)], (240, 320), (240, 320), "box_degenerate"),
        # Entirely outside the frame.
        ([(400, 300, 500, 400)], (240, 320), (240, 320), "box_out_of_frame"),
        # Thinner than 2 px.
        ([(10, 10, 11, 50)], (240, 320), (240, 320), "box_degenerate"),
        # One good, one bad: the bad one is dropped.
        ([(10, 10, 11, 50), (10, 10, 50, 50)], (240, 320), (240, 320), [(10, 10, 50, 50)]),
    ],
)
def test_to_frame_space(
    boxes: list[tuple[float, float, float, float]],
    model_size: tuple[int, int],
    frame_size: tuple[int, int],
    expected: object,
) -> None:
    result = to_frame_space(_answer(*boxes), model_size=model_size, frame_size=frame_size)
    if isinstance(expected, str):
        assert isinstance(result, ParseError)
        assert result.code == expected
    else:
        assert isinstance(result, tuple)
        got = [v for b in result for v in b.to_list()]
        assert got == pytest.approx([float(v) for e in expected for v in e])  # type: ignore[attr-defined]


FENCE = "```json\n{}\n```"
REAL_FORM_CASES = [
    # (case, completion, units, boxes as read, space)
    (
        "brackets in the thinking",
        "<think>Candidates [1, 2, 3, 4] and [5, 6, 7, 8] were ruled out.</think>"
        + FENCE.format('[{"bbox_2d": [10, 20, 110, 220], "label": "the dog"}]'),
        "pixels",
        [(10, 20, 110, 220)],
        "pixels",
    ),
    (
        "a list in the thinking, bare lists in the answer",
        "<think>maybe [0, 0, 5, 5]</think>The dog: [30, 40, 50, 60]",
        "pixels",
        [(30, 40, 50, 60)],
        "pixels",
    ),
    (
        "two JSON blocks: the first with boxes is the answer",
        FENCE.format('[{"bbox_2d": [1, 2, 30, 40], "label": "dog"}]')
        + " and also "
        + FENCE.format('[{"bbox_2d": [50, 60, 70, 80], "label": "cat"}]'),
        "pixels",
        [(1, 2, 30, 40)],
        "pixels",
    ),
    (
        "a JSON block without boxes before the answer",
        FENCE.format('{"note": "thinking"}') + FENCE.format('[{"bbox_2d": [1, 2, 30, 40], "label": "d"}]'),
        "pixels",
        [(1, 2, 30, 40)],
        "pixels",
    ),
    (
        "a label with brackets",
        FENCE.format('[{"bbox_2d": [1, 2, 30, 40], "label": "the [red] cube ]"}]'),
        "pixels",
        [(1, 2, 30, 40)],
        "pixels",
    ),
    (
        "unfenced JSON after prose with brackets",
        'Found it (see [note]): [{"bbox_2d": [1, 2, 30, 40], "label": "a [b]"}] done.',
        "pixels",
        [(1, 2, 30, 40)],
        "pixels",
    ),
    (
        "JSON boxes win over other four-number lists in the answer",
        '[{"bbox_2d": [1, 2, 30, 40], "label": "d"}] (the table is at [100, 100, 200, 200])',
        "pixels",
        [(1, 2, 30, 40)],
        "pixels",
    ),
    (
        "Qwen2.5-VL box tokens are pixels of the resized input",
        "<|object_ref_start|>dog<|object_ref_end|><|box_start|>(28,56),(280,336)<|box_end|>",
        "pixels",
        [(28, 56, 280, 336)],
        "pixels",
    ),
    (
        "Qwen2-VL box tokens are 0-1000 units",
        "<|object_ref_start|>dog<|object_ref_end|><|box_start|>(100,200),(500,750)<|box_end|>",
        "relative",
        [(100, 200, 500, 750)],
        "relative",
    ),
    (
        "box tokens only in the thinking are no answer",
        "<think><|box_start|>(1,2),(3,4)<|box_end|></think>no box, sorry",
        "pixels",
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("completion", "units", "boxes", "space"),
    [c[1:] for c in REAL_FORM_CASES],
    ids=[c[0] for c in REAL_FORM_CASES],
)
def test_answers_are_read_as_the_model_family_writes_them(
    completion: str, units: str, boxes: list[tuple[float, ...]] | None, space: str | None
) -> None:
    result = parse_box_answer(completion, units=units)  # type: ignore[arg-type]
    if boxes is None:
        assert isinstance(result, ParseError) and result.code == "no_box"
        return
    assert isinstance(result, BoxAnswer), result
    assert [b.to_list() for b in result.boxes] == [list(map(float, b)) for b in boxes]
    assert result.space == space


def test_box_tokens_of_qwen2_5_vl_map_from_the_resized_input_not_from_1000_units() -> None:
    """The model saw a 308x420 input of a 480x640 frame and wrote pixels of that input."""
    answer = parse_box_answer("<|box_start|>(105,77),(210,154)<|box_end|>")
    assert isinstance(answer, BoxAnswer)
    frame = to_frame_space(answer, model_size=(308, 420), frame_size=(480, 640))
    assert isinstance(frame, tuple) and frame[0].to_list() == pytest.approx([160.0, 120.0, 320.0, 240.0])


def test_a_policy_names_its_family_s_box_units(tiny_policy_dir: object) -> None:
    from revseg_agent.policies.base import box_units
    from revseg_agent.policies.qwen import QwenVLPolicy
    from revseg_agent.testing import ScriptedPolicy

    assert box_units(QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")) == "pixels"  # qwen2_5_vl
    assert box_units(ScriptedPolicy(reply=lambda m: "")) == "pixels"  # no attribute: Qwen2.5-VL's
