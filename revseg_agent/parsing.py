"""The only place where model text becomes typed results (or typed parse errors), and where
the canonical answers are written.

Each round has one canonical answer: the form the prompt asks for and the released model writes.
- Round 1: `<think>...</think><answer>frame id: k\nobject description: ...</answer>` (field names
  in any case, any spacing around the colon).
- Round 2: Qwen2.5-VL's native grounding answer to "Detect X with bbox coordinates.", a fenced
  JSON list ```` ```json\n[{"bbox_2d": [x1, y1, x2, y2], "label": "X"}]\n``` ```` in absolute
  pixels of the resized image the model saw.
Parsing is lenient where the meaning is unambiguous (a missing `<think>`, `bbox: [...]` lines,
bare lists, `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` tokens) and records whether the canonical
form was followed (`strict_format`), so the format reward is computed from the same result.

Round 2 reads only the answer: what follows the last `</think>` (reasoning may mention lists
and brackets). There the JSON is the first fenced ```` ```json ```` block holding `bbox_2d`
items, else the first JSON list or object that parses from a `[` or `{` (strings with brackets
in a label are JSON strings, not list ends); four-number lists are read only when no JSON boxes
are there. Box units follow the model family (`BoxUnits`): Qwen2.5-VL writes absolute pixels of
its resized input in every form, box tokens included; Qwen2-VL and Qwen3-VL write 0-1000 units.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from revseg_agent.prompts import FRAME_ID_BASE
from revseg_agent.types import Box

ParseErrorCode = Literal[
    "no_answer",
    "no_frame_id",
    "frame_id_out_of_range",
    "no_description",
    "no_box",
    "box_degenerate",
    "box_out_of_frame",
]


@dataclass(frozen=True)
class ParseError:
    """Why a completion could not be used. `code` is stable; `message` is for people."""

    code: ParseErrorCode
    message: str


@dataclass(frozen=True)
class KeyframeAnswer:
    """Round 1: the chosen keyframe (0-based position among the sampled frames) and description."""

    position: int
    description: str
    think: str
    strict_format: bool


#: Where round-2 coordinates live: absolute pixels of the resized image the model saw
#: (Qwen2.5-VL), or Qwen2-VL's relative units, 0-1000 on each axis.
BoxSpace = Literal["pixels", "relative"]
#: The extent of Qwen2-VL's relative box units (`<|box_start|>(x1,y1),(x2,y2)<|box_end|>`).
RELATIVE_BOX_UNITS = 1000
#: How a model family writes box coordinates in any form: Qwen2.5-VL absolute pixels of its
#: resized input; Qwen2-VL and Qwen3-VL 0-1000 relative units (`policies.families`).
BoxUnits = BoxSpace


@dataclass(frozen=True)
class BoxAnswer:
    """Round 2: the boxes as the model wrote them, in the model's coordinates (`space`)."""

    boxes: tuple[Box, ...]
    strict_format: bool
    space: BoxSpace = "pixels"


_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_FRAME_ID = re.compile(r"frame\s*id\s*[:=]\s*\[?\s*(-?\d+)", re.I)
_DESCRIPTION = re.compile(r"object\s*description\s*[:=]\s*(.+)", re.I | re.S)
# Strict round 1 uses the lenient field patterns (case, spacing), plus the tag structure.
_STRICT_ROUND1 = re.compile(
    r"^\s*<think>.+?</think>\s*<answer>\s*frame\s*id\s*[:=]\s*\d+\s*\n"
    r"\s*object\s*description\s*[:=]\s*\S.*?</answer>\s*$",
    re.S | re.I,
)
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_BOX_LIST = re.compile(rf"\[\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\]")
_BOX_TOKENS = re.compile(
    rf"<\|box_start\|>\s*\(\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)\s*,\s*\(\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)"
    r"\s*<\|box_end\|>"
)
_JSON_FENCE = re.compile(r"^\s*```json[ \t]*\n(.*?)\n?[ \t]*```\s*$", re.S)


def parse_keyframe_answer(text: str, num_frames: int) -> KeyframeAnswer | ParseError:
    """Parse round 1: `<think>..</think><answer>frame id: k\\nobject description: ..</answer>`.

    `num_frames` is the number of sampled frames shown; the returned position is 0-based.
    """
    answer = _ANSWER.search(text)
    if answer is None:
        return ParseError("no_answer", "round 1 has no <answer>...</answer> block")
    body = answer.group(1)
    think_match = _THINK.search(text)
    frame = _FRAME_ID.search(body)
    if frame is None:
        return ParseError("no_frame_id", "the answer has no 'frame id: <number>'")
    frame_id = int(frame.group(1))
    position = frame_id - FRAME_ID_BASE
    if not 0 <= position < num_frames:
        return ParseError(
            "frame_id_out_of_range",
            f"frame id {frame_id} is outside {FRAME_ID_BASE}..{FRAME_ID_BASE + num_frames - 1}",
        )
    desc = _DESCRIPTION.search(body)
    lines = desc.group(1).strip().splitlines() if desc else []
    description = lines[0].strip() if lines else ""
    if not description:
        return ParseError("no_description", "the answer has no 'object description: <text>'")
    return KeyframeAnswer(
        position=position,
        description=description,
        think=think_match.group(1).strip() if think_match else "",
        strict_format=bool(_STRICT_ROUND1.match(text)),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _grounding_items(data: object) -> list[Box]:
    """Boxes of the `bbox_2d` items in parsed JSON (a list of objects, or one object)."""
    items = data if isinstance(data, list) else [data]
    boxes = []
    for item in items:
        values = item.get("bbox_2d") if isinstance(item, dict) else None
        if isinstance(values, list) and len(values) == 4 and all(_is_number(v) for v in values):
            boxes.append(Box.from_list(values))
    return boxes


_FENCED_JSON = re.compile(r"```json[ \t]*\n(.*?)```", re.S)
_DECODER = json.JSONDecoder()


def answer_part(text: str) -> str:
    """What a round-2 completion answers: the text after the last `</think>` (all of it without)."""
    _head, sep, tail = text.rpartition("</think>")
    return tail if sep else text


def _json_boxes(answer: str) -> list[Box]:
    """The grounding items of the first fenced JSON block that has some, else of the first JSON
    list or object that decodes from a `[` or `{` in the answer (strings kept whole)."""
    for block in _FENCED_JSON.finditer(answer):
        try:
            boxes = _grounding_items(json.loads(block.group(1)))
        except json.JSONDecodeError:
            continue
        if boxes:
            return boxes
    for match in re.finditer(r"[\[{]", answer):
        try:
            data, _end = _DECODER.raw_decode(answer, match.start())
        except json.JSONDecodeError:
            continue
        if boxes := _grounding_items(data):
            return boxes
    return []


def _is_canonical_round2(text: str) -> bool:
    """The whole answer is one fenced JSON list of `{"bbox_2d": [4 numbers], "label": str}`."""
    fenced = _JSON_FENCE.match(text)
    if fenced is None:
        return False
    try:
        data = json.loads(fenced.group(1))
    except json.JSONDecodeError:
        return False
    return (
        isinstance(data, list)
        and bool(data)
        and all(
            isinstance(item, dict)
            and set(item) == {"bbox_2d", "label"}
            and isinstance(item["label"], str)
            and isinstance(item["bbox_2d"], list)
            and len(item["bbox_2d"]) == 4
            and all(_is_number(v) for v in item["bbox_2d"])
            for item in data
        )
    )


def parse_box_answer(text: str, *, units: BoxUnits = "pixels") -> BoxAnswer | ParseError:
    """Parse round 2's answer (after `</think>`): the native JSON list (strict when it is the whole
    answer), else `<|box_start|>` tokens, else `bbox: [x1, y1, x2, y2]` lines or bare four-number
    lists. `units`: how the policy's family writes coordinates (`policies.families.ModelFamily.box_units`)."""
    answer = answer_part(text)
    if "bbox_2d" in answer and (boxes := _json_boxes(answer)):
        return BoxAnswer(boxes=tuple(boxes), strict_format=_is_canonical_round2(text), space=units)
    tokens = [Box.from_list([float(v) for v in m.groups()]) for m in _BOX_TOKENS.finditer(answer)]
    if tokens:
        return BoxAnswer(boxes=tuple(tokens), strict_format=False, space=units)
    found = [Box.from_list([float(v) for v in m.groups()]) for m in _BOX_LIST.finditer(answer)]
    if not found:
        return ParseError("no_box", 'round 2 has no box (expected [{"bbox_2d": [x1, y1, x2, y2], ...}])')
    return BoxAnswer(boxes=tuple(found), strict_format=False, space=units)


def format_box_answer(boxes: Sequence[Box], label: str) -> str:
    """The canonical round-2 answer for model-space `boxes` (what SFT targets teach)."""
    items = ",\n".join(
        "\t" + json.dumps({"bbox_2d": [round(v) for v in b.to_list()], "label": label}) for b in boxes
    )
    return f"```json\n[\n{items}\n]\n```"


def format_keyframe_answer(think: str, position: int, description: str) -> str:
    """The canonical round-1 answer for a 0-based keyframe `position`."""
    return (
        f"<think>{think.strip()}</think>"
        f"<answer>frame id: {FRAME_ID_BASE + position}\nobject description: {description.strip()}</answer>"
    )


def to_model_space(
    boxes: Sequence[Box], *, units: BoxUnits, model_size: tuple[int, int], frame_size: tuple[int, int]
) -> tuple[Box, ...]:
    """Frame-pixel `boxes` written as the policy's family writes them for an image fed at
    `model_size`: its pixels, or 0-1000 relative units (the inverse of `to_frame_space`; what
    supervised targets teach)."""
    target = (RELATIVE_BOX_UNITS, RELATIVE_BOX_UNITS) if units == "relative" else model_size
    return tuple(b.rescale(frame_size, target) for b in boxes)


def to_frame_space(
    answer: BoxAnswer,
    *,
    model_size: tuple[int, int],
    frame_size: tuple[int, int],
    min_size: float = 2.0,
) -> tuple[Box, ...] | ParseError:
    """Map model-space boxes to the original frame, clip them to it and drop unusable ones.

    Qwen2.5-VL writes absolute pixels of the image it was fed (`model_size`, `(height, width)`,
    multiples of 28); answers in relative units (`space="relative"`) span 0-1000 on each axis
    whatever the image size. This is the single place that converts them. A box smaller than `min_size`
    pixels after clipping is dropped; when nothing usable remains the result is a `ParseError`.
    """
    height, width = frame_size
    source = (RELATIVE_BOX_UNITS, RELATIVE_BOX_UNITS) if answer.space == "relative" else model_size
    kept: list[Box] = []
    outside = degenerate = 0
    for box in answer.boxes:
        ordered = Box(min(box.x1, box.x2), min(box.y1, box.y2), max(box.x1, box.x2), max(box.y1, box.y2))
        if box.x2 <= box.x1 or box.y2 <= box.y1:
            degenerate += 1
            continue
        frame_box = ordered.rescale(source, frame_size).clip(width, height)
        if frame_box.area == 0:
            outside += 1
        elif frame_box.is_degenerate(min_size):
            degenerate += 1
        else:
            kept.append(frame_box)
    if kept:
        return tuple(kept)
    if outside:
        return ParseError("box_out_of_frame", f"every box lies outside the {width}x{height} frame")
    return ParseError("box_degenerate", f"every box is inverted or smaller than {min_size} px")
