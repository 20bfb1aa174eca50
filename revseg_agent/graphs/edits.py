"""Human edits between nodes: validated, applied with `update_state`, and recorded.

A person stepping through a run (the browser UI, `revseg segment --step`) may change what the
chain decided before the next node reads it: the keyframe (after round 1), the object
description (before round 2), the boxes (before tracking). Each edit is checked against the
run's own video (a keyframe inside it, a box that is not degenerate inside the frame) so a bad
value is refused with a message instead of failing the next node, and each is appended to the
state's `human_edits`, which the trace keeps: a trace tells what the model chose and what a
person changed.
"""

from __future__ import annotations

import time
from typing import Any

from revseg_agent.errors import InputError
from revseg_agent.types import Box

#: The state keys a person may edit, and why each is safe to change.
EDITABLE = {
    "keyframe_index": "the frame round 2 grounds on and tracking starts from",
    "description": "the object description round 2 grounds",
    "boxes": "the box(es) tracking starts from, in frame pixels (x1, y1, x2, y2)",
}


def check_edit(state: dict[str, Any], key: str, value: Any) -> Any:
    """The edit's value, normalised, or `InputError` naming what is wrong."""
    if key not in EDITABLE:
        raise InputError(f"{key!r} cannot be edited; editable: {', '.join(EDITABLE)}")
    if key == "keyframe_index":
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise InputError(f"the keyframe must be a frame number, got {value!r}")
        total = state.get("num_video_frames")
        if total is None:
            raise InputError("the video has not been opened yet: run the first node first")
        if not 0 <= int(value) < total:
            raise InputError(f"keyframe {int(value)} is outside the video's {total} frames (0..{total - 1})")
        return int(value)
    if key == "description":
        if not isinstance(value, str) or not value.strip():
            raise InputError("the object description is empty")
        return value.strip()
    size = state.get("frame_size")
    if size is None:
        raise InputError("the video has not been opened yet: run the first node first")
    height, width = size
    try:
        boxes = [Box.from_list(b) for b in value]
    except (TypeError, ValueError) as exc:
        raise InputError(f"boxes must be lists of 4 numbers (x1, y1, x2, y2): {exc}") from exc
    if not boxes:
        raise InputError("no box given")
    for box in boxes:
        inside = box.x1 >= 0 and box.y1 >= 0 and box.x2 <= width and box.y2 <= height
        if box.is_degenerate() or not inside:
            raise InputError(f"box {box.to_list()} is empty or outside the {width}x{height} frame")
    return [b.to_list() for b in boxes]


def apply_edit(graph: Any, config: dict[str, Any], key: str, value: Any, *, by: str = "person") -> Any:
    """Check and apply one edit to a paused run; returns the value stored."""
    snapshot = graph.get_state(config)
    state = dict(snapshot.values)
    checked = check_edit(state, key, value)
    record = {
        "key": key,
        "old": state.get(key),
        "new": checked,
        "by": by,
        "at": time.time(),
        "before": list(snapshot.next),
    }
    graph.update_state(config, {key: checked, "human_edits": [record]})
    return checked
