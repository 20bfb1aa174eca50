"""Round 2 alone, measured: does a policy box the object a description names on one frame?

The probe the grounding curriculum reports and the shipped checkpoint's test re-measures: for
single-target expressions of a MeViS-layout split (the synthetic world's), the frame where the
target is largest with the expression's `description` (what round 1 should name) as the label;
the policy answers round 2's prompt alone (no history), greedily, and the first box's IoU with
the target's box is the score (0 when nothing parses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from revseg_agent.eval.datasets import open_benchmark
from revseg_agent.graphs.chats import KEYFRAME_REF, round2_messages
from revseg_agent.masks_io import decode_rle
from revseg_agent.parsing import BoxAnswer, parse_box_answer, to_frame_space
from revseg_agent.policies.base import ImageFrame, Policy, SamplingParams, box_units
from revseg_agent.synth.scenes import name_parts
from revseg_agent.types import Box
from revseg_agent.video import open_video


@dataclass(frozen=True)
class GroundingItem:
    """One frame, the description of its target, the target's box (frame pixels)."""

    frame: np.ndarray
    label: str
    box: Box


def grounding_items(split_root: str | Path, count: int, *, all_frames: bool = False) -> list[GroundingItem]:
    """Up to `count` items of a split's single-target expressions, in the split's order: each on
    the frame where its target is largest, or with `all_frames` on every frame where the target
    shows at least 20 pixels (training data)."""
    bench = open_benchmark("mevis", split_root)
    out: list[GroundingItem] = []
    for sample in bench.samples():
        if len(sample.targets) != 1:
            continue
        gt = bench.ground_truth(sample)
        if gt is None:
            continue
        areas = gt.reshape(len(gt), -1).sum(1)
        if not areas.any():
            continue
        indices = [int(i) for i in np.flatnonzero(areas >= 20)] if all_frames else [int(np.argmax(areas))]
        video = open_video(bench.frames_dir(sample))
        label = str(sample.extra.get("description") or sample.text)
        for index in indices:
            box = Box.from_mask(gt[index])
            if box is not None:
                out.append(GroundingItem(video.frame(index), label, box))
        if len(out) >= count:
            break
    return out[:count]


def answer_box(policy: Policy, frame: np.ndarray, label: str, *, max_new_tokens: int = 50) -> Box | None:
    """Round 2's prompt alone on `frame` for `label`, answered greedily: the first box in frame
    pixels, or None when the answer does not parse or boxes nothing."""
    (gen,) = policy.generate(
        round2_messages(label),
        {KEYFRAME_REF: ImageFrame(frame)},
        sampling=SamplingParams(max_new_tokens=max_new_tokens),
    )
    answer = parse_box_answer(gen.text, units=box_units(policy))
    size = (int(frame.shape[0]), int(frame.shape[1]))
    boxes = (
        to_frame_space(answer, model_size=gen.image_sizes[-1], frame_size=size)
        if isinstance(answer, BoxAnswer)
        else answer
    )
    return boxes[0] if isinstance(boxes, tuple) and boxes else None


def answer_ious(policy: Policy, items: list[GroundingItem], *, max_new_tokens: int = 50) -> np.ndarray:
    """Greedy round-2 answers on each item alone: IoU of the first box with the target's (0 when
    the answer does not parse)."""
    ious = []
    for item in items:
        box = answer_box(policy, item.frame, item.label, max_new_tokens=max_new_tokens)
        ious.append(box.iou(item.box) if box is not None else 0.0)
    return np.array(ious)


def centre_ious(items: list[GroundingItem]) -> np.ndarray:
    """The centre box's IoU on the same items (the baseline that knows nothing)."""
    return np.array([Box.centre(int(i.frame.shape[0]), int(i.frame.shape[1])).iou(i.box) for i in items])


def summary(ious: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(ious.mean()), 4),
        "median": round(float(np.median(ious)), 4),
        "over_0.5": round(float((ious > 0.5).mean()), 4),
    }


@dataclass(frozen=True)
class SceneItem:
    """One named object of a synthetic-world video on the frame where it is largest, with the
    boxes of every object of that video visible there (by name, the target's among them)."""

    frame: np.ndarray
    label: str
    boxes: dict[str, Box]


def scene_items(split_root: str | Path) -> list[SceneItem]:
    """Every object of a synthetic-world split (`revseg synth`'s MeViS layout, whose meta lists
    each video's `objects` by name) that an expression refers to, in the split's order."""
    root = Path(split_root)
    videos = json.loads((root / "meta_expressions.json").read_text())["videos"]
    rles = json.loads((root / "mask_dict.json").read_text())
    out: list[SceneItem] = []
    for video_id, video in videos.items():
        anno_of = {
            str(obj): str(anno)
            for exp in video["expressions"].values()
            for obj, anno in zip(exp["obj_id"], exp["anno_id"], strict=True)
        }
        masks = {
            video["objects"][obj]["name"]: np.stack([decode_rle(r) for r in rles[anno]])
            for obj, anno in anno_of.items()
        }
        frames = open_video(root / "JPEGImages" / video_id)
        for name, stack in masks.items():
            index = int(np.argmax(stack.reshape(len(stack), -1).sum(1)))
            boxes = {n: b for n, m in masks.items() if (b := Box.from_mask(m[index])) is not None}
            if name in boxes:
                out.append(SceneItem(frames.frame(index), name, boxes))
    return out


#: Where round 2's box lands, named by what it shares with the target (`landing`).
LANDINGS = ("target", "same shape", "same colour", "other object", "floor", "unparsed")


def landing(answer: Box | None, target: str, boxes: dict[str, Box], *, min_iou: float = 0.1) -> str:
    """Which object the answer boxes (the one its box overlaps most, IoU above `min_iou`),
    named by what it shares with the target "the <colour> <shape>": the target itself, another
    of its shape, another of its colour, another object, none ("floor"), or no box at all."""
    if answer is None:
        return "unparsed"
    overlaps = {name: answer.iou(box) for name, box in boxes.items()}
    best = max(overlaps, key=lambda name: overlaps[name], default=None)
    if best is None or overlaps[best] <= min_iou:
        return "floor"
    if best == target:
        return "target"
    colour, shape = name_parts(target)
    best_colour, best_shape = name_parts(best)
    return "same shape" if best_shape == shape else "same colour" if best_colour == colour else "other object"
