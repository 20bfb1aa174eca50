"""Queries over a synthetic scene that need ReVSeg's reasoning, with their targets and evidence.

Each intent finds its targets from the scene's events and refuses scenes where the answer would
be ambiguous (two objects entering on nearly the same frame, near-equal speeds, ...). Each has
several phrasings; the last one is held out of the train and validation splits, so the test
split asks some questions in words the policy never saw. The evidence sentence is what a
templated `<think>` says (supervised warm start); it names objects, never frame numbers, so it
holds for whichever frames a run samples.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from revseg_agent.synth.scenes import COLOURS, SHAPES, Scene, SceneObject, object_name


@dataclass(frozen=True)
class Query:
    intent: str
    text: str
    targets: tuple[int, ...]
    description: str
    evidence: str


PHRASINGS: dict[str, tuple[str, ...]] = {
    "attribute": (
        "{name}",
        "the {colour} {shape} in the video",
        "the {shape} that is {colour}",
        "find {name}",
    ),
    "enters_last": (
        "the shape that enters last",
        "the object that appears last",
        "the last shape to come into view",
        "the shape that shows up after all the others",
    ),
    "stops_first": (
        "the shape that stops first",
        "the object that stops moving first",
        "the first shape to come to rest",
        "the shape that is the first to stand still",
    ),
    "leaves": (
        "the shape that leaves the scene",
        "the object that moves out of view",
        "the shape that exits the frame",
        "the shape that disappears off the edge",
    ),
    "fastest": (
        "the fastest shape",
        "the shape that moves the fastest",
        "the quickest object",
        "the shape with the highest speed",
    ),
    "largest": (
        "the largest shape",
        "the biggest object",
        "the shape that is bigger than the rest",
        "the bulkiest shape",
    ),
    "smallest": (
        "the smallest shape",
        "the tiniest object",
        "the shape that is smaller than the rest",
        "the littlest shape",
    ),
    "hit": (
        "the shape {hitter} hits",
        "what {hitter} bumps into",
        "the object that {hitter} collides with",
        "the shape struck by {hitter}",
    ),
    "hitter": (
        "the shape that hits {hit}",
        "what bumps into {hit}",
        "the object that collides with {hit}",
        "the shape that strikes {hit}",
    ),
    "static": (
        "the shape that never moves",
        "the object that stays still the whole time",
        "the motionless shape",
        "the shape that does not move at all",
    ),
    "keeps_moving": (
        "the shapes that keep moving until the end",
        "the objects still moving at the end",
        "the shapes that never stop",
        "the shapes in motion until the last moment",
    ),
    "same_colour": (
        "all the {colour} shapes",
        "the {colour} objects",
        "every {colour} shape",
        "each shape that is {colour}",
    ),
    "absent": (
        "{name}",
        "the {colour} {shape} in the video",
        "the {shape} that is {colour}",
        "find {name}",
    ),
}


def _template_pattern(template: str) -> re.Pattern[str]:
    """A phrasing template as a regex: its words literally, each `{field}` as any text."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".+?".join(re.escape(part) for part in parts))


def held_out_phrasing(intent: str, text: str) -> bool:
    """Whether `text` is worded in `intent`'s last phrasing, which only the test split asks: a
    policy selected on the valid split has never been scored on these words."""
    options = PHRASINGS.get(intent)
    return options is not None and _template_pattern(options[-1]).fullmatch(text) is not None


#: Intents whose answer is more than one object, and the one with none.
MULTI = {"keeps_moving", "same_colour"}
NO_TARGET = "absent"


#: What each scripted role does, in the words round 1's reasoning lists a scene's objects with.
ROLE_WORDS = {
    "mover": "moves",
    "stopper": "stops",
    "static": "stays still",
    "enterer": "enters",
    "leaver": "leaves",
    "hitter": "rolls into another",
    "hit": "is hit",
}


def inventory(objects: Mapping[str, Mapping[str, str]]) -> str:
    """The scene's objects, each with its size and what it does, in id order, as the world's
    `meta_expressions.json` lists them per video: "The video shows the red circle (large,
    moves) and the blue square (small, stays still)." A perception step for round 1's reasoning:
    which objects are there and how each moves, before which one the query means."""
    items = [
        f"{o['name']} ({o['size']}, {ROLE_WORDS.get(o['role'], o['role'])})"
        for _, o in sorted(objects.items(), key=lambda kv: int(kv[0]))
    ]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"The video shows {listed}."


#: Every object name the world draws, colours then shapes in their fixed order.
NAMES: tuple[str, ...] = tuple(object_name(c, s) for c in COLOURS for s in SHAPES)
#: An object name anywhere in text (a description, a listing).
NAME_PATTERN = re.compile(rf"the (?:{'|'.join(COLOURS)}) (?:{'|'.join(SHAPES)})")


def listing(names: Iterable[str]) -> str:
    """Object names in the world's fixed order ("the red circle, the blue square and the green
    triangle"): a set written one way only, so a target listing a scene is one string."""
    ordered = sorted(set(names), key=NAMES.index)
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " and " + ordered[-1]


def _names(objects: list[SceneObject]) -> str:
    return " and ".join(o.name for o in objects)


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _unique_extreme(values: dict[int, float], *, largest: bool, margin: float) -> int | None:
    """The id whose value is the largest (smallest) by at least `margin` over the runner-up."""
    if len(values) < 2:
        return None
    ranked = sorted(values.items(), key=lambda kv: kv[1], reverse=largest)
    (best, v1), (_, v2) = ranked[0], ranked[1]
    return best if abs(v1 - v2) >= margin else None


def _first_visible(scene: Scene, obj_id: int) -> int | None:
    seen = np.flatnonzero(scene.visible(obj_id))
    return int(seen[0]) if len(seen) else None


def _stop_frame(scene: Scene, obj_id: int) -> int | None:
    """The frame after which the object never moves again (None: moves to the end or never)."""
    moving = scene.moving(obj_id)
    if not moving.any() or moving[-3:].any():
        return None
    return int(np.flatnonzero(moving)[-1]) + 1


def candidates(scene: Scene) -> dict[str, Callable[[str], Query] | None]:
    """Per intent, a maker of its query from a phrasing template (None: not askable here)."""
    objs = {o.obj_id: o for o in scene.objects}
    n = len(scene.frames)
    out: dict[str, Callable[[str], Query] | None] = {}

    def single(intent: str, obj: SceneObject, evidence: str, **fmt: str) -> Callable[[str], Query]:
        return lambda template: Query(intent, template.format(**fmt), (obj.obj_id,), obj.name, evidence)

    enters = {i: f for i in objs if (f := _first_visible(scene, i)) is not None}
    late = _unique_extreme({i: float(f) for i, f in enters.items()}, largest=True, margin=2)
    out["enters_last"] = (
        single("enters_last", objs[late], f"{_cap(objs[late].name)} enters after the others.")
        if late is not None and enters[late] > 0
        else None
    )
    stops = {i: float(s) for i in objs if (s := _stop_frame(scene, i)) is not None}
    first = _unique_extreme(stops, largest=False, margin=2) if len(stops) >= 1 else None
    if len(stops) == 1:
        first = next(iter(stops))
    out["stops_first"] = (
        single("stops_first", objs[first], f"{_cap(objs[first].name)} stops before the others.")
        if first is not None
        else None
    )
    leavers = [i for i in objs if scene.visible(i)[0] and not scene.visible(i)[-1]]
    out["leaves"] = (
        single("leaves", objs[leavers[0]], f"{_cap(objs[leavers[0]].name)} moves out of view.")
        if len(leavers) == 1
        else None
    )
    speeds = {i: scene.speed(i) for i in objs}
    fast = _unique_extreme(speeds, largest=True, margin=1.0)
    out["fastest"] = (
        single("fastest", objs[fast], f"{_cap(objs[fast].name)} moves faster than the others.")
        if fast is not None
        else None
    )
    large = [o for o in objs.values() if o.size == "large"]
    small = [o for o in objs.values() if o.size == "small"]
    out["largest"] = (
        single("largest", large[0], f"{_cap(large[0].name)} is bigger than the others.")
        if len(large) == 1
        else None
    )
    out["smallest"] = (
        single("smallest", small[0], f"{_cap(small[0].name)} is smaller than the others.")
        if len(small) == 1
        else None
    )
    if scene.hits:
        a, b, _ = scene.hits[0]
        out["hit"] = single(
            "hit", objs[b], f"{_cap(objs[a].name)} rolls into {objs[b].name}.", hitter=objs[a].name
        )
        out["hitter"] = single(
            "hitter", objs[a], f"{_cap(objs[a].name)} rolls into {objs[b].name}.", hit=objs[b].name
        )
    else:
        out["hit"] = out["hitter"] = None
    still = [o for o in objs.values() if not scene.moving(o.obj_id).any() and scene.visible(o.obj_id).all()]
    out["static"] = (
        single("static", still[0], f"{_cap(still[0].name)} never moves.")
        if len(still) == 1 and len(objs) > 1
        else None
    )
    going = [
        o
        for o in objs.values()
        if scene.visible(o.obj_id)[-1] and scene.moving(o.obj_id)[max(1, n - 3) :].all()
    ]
    if len(going) >= 2:
        ids = tuple(o.obj_id for o in going)
        desc = _names(going)
        out["keeps_moving"] = lambda t: Query(
            "keeps_moving", t, ids, desc, f"{_cap(desc)} are still moving at the end."
        )
    else:
        out["keeps_moving"] = None
    by_colour: dict[str, list[SceneObject]] = {}
    for o in objs.values():
        by_colour.setdefault(o.colour, []).append(o)
    groups = [(c, g) for c, g in by_colour.items() if len(g) >= 2]
    if groups:
        colour, group = groups[0]
        ids = tuple(o.obj_id for o in group)
        out["same_colour"] = lambda t: Query(
            "same_colour", t.format(colour=colour), ids, _names(group), f"{_cap(_names(group))} are {colour}."
        )
    else:
        out["same_colour"] = None
    return out


def attribute_query(obj: SceneObject, template: str) -> Query:
    text = template.format(name=obj.name, colour=obj.colour, shape=obj.shape)
    return Query("attribute", text, (obj.obj_id,), obj.name, f"{_cap(obj.name)} is in the video.")


def absent_query(scene: Scene, rng: np.random.Generator, template: str) -> Query | None:
    present = {(o.colour, o.shape) for o in scene.objects}
    missing = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    if not missing:
        return None
    colour, shape = missing[int(rng.integers(len(missing)))]
    name = object_name(colour, shape)
    return Query(
        NO_TARGET,
        template.format(name=name, colour=colour, shape=shape),
        (),
        name,
        f"No {colour} {shape} appears.",
    )
