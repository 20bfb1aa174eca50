"""The only place where model text becomes typed results (or typed parse errors).

Parsing is lenient where the meaning is unambiguous (extra whitespace, a missing `<think>`,
Qwen2.5-VL's native JSON grounding output) and records whether the strict ReVSeg format was
followed, so the format reward can be computed from the same result.
"""

from __future__ import annotations

import json
import re
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


@dataclass(frozen=True)
class BoxAnswer:
    """Round 2: the boxes as the model wrote them, in the model's (resized) input coordinates."""

    boxes: tuple[Box, ...]
    strict_format: bool


_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_FRAME_ID = re.compile(r"frame\s*id\s*[:=]\s*\[?\s*(-?\d+)", re.I)
_DESCRIPTION = re.compile(r"object\s*description\s*[:=]\s*(.+)", re.I | re.S)
_STRICT_ROUND1 = re.compile(
    r"^\s*<think>.+?</think>\s*<answer>\s*frame id:\s*\d+\s*\n\s*object description:\s*\S.*?</answer>\s*$",
    re.S,
)
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_BOX_LIST = re.compile(rf"\[\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\]")
_STRICT_ROUND2 = re.compile(rf"^\s*(bbox:\s*{_BOX_LIST.pattern}\s*)+$", re.S)


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


def _json_boxes(text: str) -> list[Box]:
    """Qwen2.5-VL's native grounding output: `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return []
    items = data if isinstance(data, list) else [data]
    boxes = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("bbox_2d"), list) and len(item["bbox_2d"]) == 4:
            try:
                boxes.append(Box.from_list(item["bbox_2d"]))
            except (TypeError, ValueError):
                continue
    return boxes


def parse_box_answer(text: str) -> BoxAnswer | ParseError:
    """Parse round 2: one or more `bbox: [x1, y1, x2, y2]` (or Qwen's JSON `bbox_2d` list)."""
    found = [Box.from_list([float(v) for v in m.groups()]) for m in _BOX_LIST.finditer(text)]
    json_found = _json_boxes(text) if "bbox_2d" in text else []
    boxes = json_found or found
    if not boxes:
        return ParseError("no_box", "round 2 has no 'bbox: [x1, y1, x2, y2]'")
    return BoxAnswer(boxes=tuple(boxes), strict_format=bool(_STRICT_ROUND2.match(text)))


def to_frame_space(
    answer: BoxAnswer,
    *,
    model_size: tuple[int, int],
    frame_size: tuple[int, int],
    min_size: float = 2.0,
) -> tuple[Box, ...] | ParseError:
    """Map model-space boxes to the original frame, clip them to it and drop unusable ones.

    Qwen2.5-VL writes absolute pixels of the image it was fed (`model_size`, `(height, width)`,
    multiples of 28); this is the single place that converts them. A box smaller than `min_size`
    pixels after clipping is dropped; when nothing usable remains the result is a `ParseError`.
    """
    height, width = frame_size
    kept: list[Box] = []
    outside = degenerate = 0
    for box in answer.boxes:
        ordered = Box(min(box.x1, box.x2), min(box.y1, box.y2), max(box.x1, box.x2), max(box.y1, box.y2))
        if box.x2 <= box.x1 or box.y2 <= box.y1:
            degenerate += 1
            continue
        frame_box = ordered.rescale(model_size, frame_size).clip(width, height)
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
