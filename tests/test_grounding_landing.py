"""Where round 2's box lands (`eval.grounding.landing`) and the per-object items it is measured on
(`eval.grounding.scene_items`): the diagnosis behind SFT's `grounding_lookalikes`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from revseg_agent.eval.grounding import LANDINGS, landing, scene_items
from revseg_agent.types import Box

BOXES = {
    "the blue triangle": Box(10, 10, 30, 30),
    "the white triangle": Box(60, 60, 80, 80),
    "the blue circle": Box(10, 60, 30, 80),
    "the red square": Box(60, 10, 80, 30),
}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Box(10, 10, 30, 30), "target"),
        (Box(11, 9, 31, 29), "target"),
        (Box(60, 60, 80, 80), "same shape"),
        (Box(10, 60, 30, 80), "same colour"),
        (Box(60, 10, 80, 30), "other object"),
        (Box(40, 40, 50, 50), "floor"),
        (Box(28, 28, 62, 62), "floor"),  # overlaps two objects, neither above IoU 0.1
        (None, "unparsed"),
    ],
)
def test_landing_names_what_the_boxed_object_shares_with_the_target(
    answer: Box | None, expected: str
) -> None:
    assert expected in LANDINGS
    assert landing(answer, "the blue triangle", BOXES) == expected


def test_scene_items_are_every_referred_object_on_its_largest_frame(tmp_path: Path) -> None:
    from revseg_agent.masks_io import decode_rle
    from revseg_agent.synth import WorldSpec, write_world

    write_world(tmp_path / "world", WorldSpec(seed=5, train=0, valid=4, test=0))
    split = tmp_path / "world" / "valid"
    items = scene_items(split)
    videos = json.loads((split / "meta_expressions.json").read_text())["videos"]
    rles = json.loads((split / "mask_dict.json").read_text())
    expected = []
    for video in videos.values():
        referred = {
            (str(o), str(a))
            for e in video["expressions"].values()
            for o, a in zip(e["obj_id"], e["anno_id"], strict=True)
        }
        for obj, anno in sorted(referred, key=lambda pair: int(pair[1])):
            stack = np.stack([decode_rle(r) for r in rles[anno]])
            largest = int(np.argmax(stack.reshape(len(stack), -1).sum(1)))
            expected.append((video["objects"][obj]["name"], Box.from_mask(stack[largest])))

    def key(entry: tuple[str, Box | None]) -> tuple[str, str]:
        return entry[0], repr(entry[1])

    assert sorted(((i.label, i.boxes[i.label]) for i in items), key=key) == sorted(expected, key=key)
    assert all(i.frame.shape == (112, 112, 3) for i in items)
    assert any(len(i.boxes) > 1 for i in items)  # the other objects in view come with it
