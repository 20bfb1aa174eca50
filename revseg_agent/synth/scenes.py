"""Procedural scenes: flat-coloured shapes moving over textured floors, with exact masks.

Why: every benchmark of this field needs a 7B model to say anything; a world small enough for a
CPU, whose ground truth is exact and whose queries need ReVSeg's reasoning (when things enter,
stop, leave, hit each other, which is fastest or largest), lets the whole chain be trained and
measured on a laptop. Everything is drawn from one `numpy` generator seeded per scene, so a seed
gives the same pixels on every machine.

Each object follows a script: `mover` (bounces off the walls), `stopper` (moves, then stops for
good), `static`, `enterer` (comes in from outside the frame), `leaver` (goes out and stays out),
`hitter` and `hit` (the hitter rolls into a resting object and stops; the object it hits starts
moving). Objects are drawn in a fixed depth order, so a mask is what is visible of the object
after the ones in front of it (occlusion), and masks of one frame never overlap. The scene is lit
from one side (`_lighting`): colours shift a little with position, masks are unaffected.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import cv2
import numpy as np

SIZE = (112, 112)  # (height, width): 4 x 4 tokens of 28 px for Qwen2.5-VL
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
RADII = {"small": 7, "large": 13}
ROLES = ("mover", "stopper", "static", "enterer", "leaver")


def object_name(colour: str, shape: str) -> str:
    """How the world names an object: "the red circle"."""
    return f"the {colour} {shape}"


def name_parts(name: str) -> tuple[str, str]:
    """The colour and shape of a world object's name ("the red circle" -> ("red", "circle")),
    the inverse of `object_name`; anything else is refused rather than split wrongly."""
    words = name.split()
    if len(words) != 3 or words[0] != "the" or words[1] not in COLOURS or words[2] not in SHAPES:
        raise ValueError(f"not a world object's name (the <colour> <shape>): {name!r}")
    return words[1], words[2]


def name_classes(name: str) -> tuple[int, int]:
    """A world name's colour and shape as class indices into `COLOURS` and `SHAPES` (the labels
    of the benchmarks' probes and readers)."""
    colour, shape = name_parts(name)
    return list(COLOURS).index(colour), SHAPES.index(shape)


@dataclass
class SceneObject:
    """One shape and its script; `positions[t]` is its centre on frame t (None: not in the scene)."""

    obj_id: int
    colour: str
    shape: str
    size: str
    role: str
    positions: list[tuple[float, float] | None] = field(default_factory=list)

    @property
    def name(self) -> str:
        return object_name(self.colour, self.shape)

    @property
    def radius(self) -> int:
        return RADII[self.size]


@dataclass
class Scene:
    """A rendered clip: RGB frames `(T, H, W, 3)`, visible masks per object `(T, H, W)`, and the
    events the queries are built from."""

    frames: np.ndarray
    objects: list[SceneObject]
    masks: dict[int, np.ndarray]
    #: (hitter id, hit id, frame of contact)
    hits: list[tuple[int, int, int]] = field(default_factory=list)

    def visible(self, obj_id: int) -> np.ndarray:
        """Per frame: is any of the object visible."""
        return np.asarray(self.masks[obj_id].reshape(len(self.frames), -1).any(axis=1))

    def moving(self, obj_id: int) -> np.ndarray:
        """Per frame t >= 1: did the object's centre move since frame t - 1 (False on frame 0)."""
        pos = next(o for o in self.objects if o.obj_id == obj_id).positions
        out = np.zeros(len(pos), bool)
        for t in range(1, len(pos)):
            a, b = pos[t - 1], pos[t]
            out[t] = a is not None and b is not None and (abs(a[0] - b[0]) + abs(a[1] - b[1])) > 0.25
        return out

    def speed(self, obj_id: int) -> float:
        """Mean distance per frame over the frames it is in the scene."""
        pos = [p for p in next(o for o in self.objects if o.obj_id == obj_id).positions if p is not None]
        if len(pos) < 2:
            return 0.0
        steps = [np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(pos)]
        return float(np.mean(steps))


#: Scene lighting: brightness rises left to right by +-`LIGHT_GAIN`, and a blue tint of
#: +-`LIGHT_TINT` grows downwards, over the floor and the objects alike.
LIGHT_GAIN = 0.25
LIGHT_TINT = 40.0


def _lighting(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel gain and additive tint of the scene's light. Why: Qwen2.5-VL has no absolute
    position embedding (2-D RoPE in the vision tower, M-RoPE in the language model, both
    relative), so where an object is must be read from content. A faint code on the floor alone
    is hidden exactly where the object is; light that falls on the object too puts its position
    in its own pixels. Measured with revseg-tiny (which of the 4 x 4 token cells holds a lone
    shape, 16-way, 8 images a step): with this light, at chance until ~2,000 steps, then 63-75%
    exact (91-100% within one cell) at 3,000-4,000 steps; with a floor code alone, still at
    chance at 3,750 steps."""
    h, w = size
    gain = 1.0 + LIGHT_GAIN * np.linspace(-1.0, 1.0, w)[None, :, None]
    tint = np.zeros((h, 1, 3))
    tint[..., 2] = LIGHT_TINT * np.linspace(-1.0, 1.0, h)[:, None]
    return gain, tint


def _lit(frame: np.ndarray, light: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    gain, tint = light
    return np.clip(frame.astype(np.float32) * gain + tint, 0, 255).astype(np.uint8)


def lit_colour(colour: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """What an object of `colour` looks like at every pixel of a frame, under the scene's light
    (`(H, W, 3)` uint8): a mask is exactly where a frame equals this."""
    return _lit(np.broadcast_to(np.array(COLOURS[colour], np.uint8), (*size, 3)), _lighting(size))


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A muted floor: coarse blocks, stripes or a gradient, with fine noise (unlit)."""
    h, w = size
    kind = rng.integers(3)
    base = rng.integers(60, 130, 3)
    if kind == 0:
        cells = rng.integers(-25, 25, (h // 14 + 1, w // 14 + 1, 1)) + base
        floor = np.kron(cells, np.ones((14, 14, 1)))[:h, :w]
    elif kind == 1:
        period = int(rng.integers(8, 20))
        band = ((np.arange(w) // period) % 2)[None, :, None] * rng.integers(10, 30)
        floor = np.broadcast_to(base + band, (h, w, 3))
    else:
        ramp = np.linspace(-30, 30, h)[:, None, None]
        floor = np.broadcast_to(base + ramp, (h, w, 3))
    noise = rng.integers(-6, 7, (h, w, 3))
    return np.clip(floor + noise, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Still:
    """One lit frame with one shape on a floor: the grounding curriculum's first input."""

    frame: np.ndarray
    name: str
    mask: np.ndarray
    #: The names of the other shapes drawn (distractors), in drawing order.
    others: tuple[str, ...] = ()


def render_still(
    seed: int, size: tuple[int, int] = SIZE, *, distractors: int = 0, lookalikes: bool = False
) -> Still:
    """A shape (any colour, shape and size of the world) at a uniform random position on one of
    the world's floors, under the scene's light, with `distractors` other shapes of other
    (colour, shape) pairs that do not touch it or each other; `name` names the first shape and
    `mask` is exactly its pixels (the grounding curriculum's inputs).

    With `lookalikes` every distractor shares the target's shape (in another colour) or its
    colour (in another shape), each by a coin flip: only the whole name tells the target apart.
    Why: a policy that boxes "a triangle" when asked for "the blue triangle" scores well on
    frames without a second triangle and no better than a coin where there is one."""
    rng = np.random.default_rng(seed)
    frame = _background(rng, size)
    h, w = size
    placed: list[tuple[str, str, int, tuple[float, float]]] = []
    for k in range(distractors + 1):
        for _ in range(100):  # rejection sampling: a free spot of a new kind
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            if lookalikes and placed and rng.random() < 0.5:
                shape = placed[0][1]  # the target's shape; the colour drawn above
            elif lookalikes and placed:
                colour = placed[0][0]  # the target's colour; the shape drawn above
            radius = RADII[list(RADII)[int(rng.integers(len(RADII)))]]
            centre = (
                float(rng.uniform(radius + 1, w - 1 - radius)),
                float(rng.uniform(radius + 1, h - 1 - radius)),
            )
            apart = all(
                np.hypot(centre[0] - c[0], centre[1] - c[1]) > radius + r + 3 and (colour, shape) != (o, t)
                for o, t, r, c in placed
            )
            if apart:
                placed.append((colour, shape, radius, centre))
                break
        if len(placed) <= k:
            break  # no room left for another distractor
    masks = []
    for colour, shape, radius, centre in placed:
        mask = np.zeros(size, np.uint8)
        _draw(mask, shape, centre, radius, 1)
        frame[mask.astype(bool)] = COLOURS[colour]
        masks.append(mask.astype(bool))
    names = tuple(object_name(c, s) for c, s, _, _ in placed)
    return Still(_lit(frame, _lighting(size)), names[0], masks[0], names[1:])


def _draw(canvas: np.ndarray, shape: str, centre: tuple[float, float], radius: int, value: object) -> None:
    x, y = round(centre[0]), round(centre[1])
    if shape == "circle":
        cv2.circle(canvas, (x, y), radius, value, -1)  # type: ignore[call-overload]
    elif shape == "square":
        cv2.rectangle(canvas, (x - radius, y - radius), (x + radius, y + radius), value, -1)  # type: ignore[call-overload]
    else:
        pts = np.array([[x, y - radius], [x - radius, y + radius], [x + radius, y + radius]], np.int32)
        cv2.fillPoly(canvas, [pts], value)  # type: ignore[call-overload]


def _path(
    rng: np.random.Generator, role: str, n: int, radius: int, size: tuple[int, int]
) -> list[tuple[float, float] | None]:
    h, w = size
    lo, hi_x, hi_y = radius + 2, w - radius - 3, h - radius - 3
    x, y = float(rng.uniform(lo, hi_x)), float(rng.uniform(lo, hi_y))
    speed = float(rng.uniform(1.5, 4.0))
    angle = float(rng.uniform(0, 2 * np.pi))
    vx, vy = speed * np.cos(angle), speed * np.sin(angle)
    out: list[tuple[float, float] | None] = []
    if role == "static":
        return [(x, y)] * n
    if role == "enterer":
        start = int(rng.integers(n // 4, n // 2 + 1))
        side = int(rng.integers(4))
        # from outside one side, heading inwards
        if side == 0:
            x, vx = -radius - 1.0, abs(vx) + 1
        elif side == 1:
            x, vx = w + radius + 1.0, -abs(vx) - 1
        elif side == 2:
            y, vy = -radius - 1.0, abs(vy) + 1
        else:
            y, vy = h + radius + 1.0, -abs(vy) - 1
        inside = False
        for t in range(n):
            if t < start:
                out.append(None)
                continue
            out.append((x, y))
            x, y = x + vx, y + vy
            inside = inside or (lo <= x <= hi_x and lo <= y <= hi_y)
            if inside:  # once in, it bounces off the walls like a mover
                if not lo <= x <= hi_x:
                    vx, x = -vx, min(max(x, lo), hi_x)
                if not lo <= y <= hi_y:
                    vy, y = -vy, min(max(y, lo), hi_y)
        return out
    if role == "leaver":
        gone = False
        vx, vy = vx * 1.6, vy * 1.6
        for _ in range(n):
            if gone:
                out.append(None)
                continue
            out.append((x, y))
            x, y = x + vx, y + vy
            gone = x < -radius or x > w + radius or y < -radius or y > h + radius
        return out
    stop = int(rng.integers(n // 4, 3 * n // 4)) if role == "stopper" else n
    for t in range(n):
        out.append((x, y))
        if t >= stop:
            continue
        x, y = x + vx, y + vy
        if not lo <= x <= hi_x:
            vx, x = -vx, min(max(x, lo), hi_x)
        if not lo <= y <= hi_y:
            vy, y = -vy, min(max(y, lo), hi_y)
    return out


def _collision(
    rng: np.random.Generator, n: int, r_a: int, r_b: int, size: tuple[int, int]
) -> tuple[list[tuple[float, float] | None], list[tuple[float, float] | None], int]:
    """A rolls into resting B along a straight line and stops there; B moves on from then."""
    h, w = size
    by = float(rng.uniform(r_b + 20, h - r_b - 20))
    bx = float(rng.uniform(w - r_b - 24, w - r_b - 10))
    ax = float(rng.uniform(r_a + 2, max(r_a + 3, bx - r_a - r_b - 30)))
    contact_x = bx - r_a - r_b
    speed = float(rng.uniform(2.5, 4.0))
    hit_at = min(n - 4, max(3, int((contact_x - ax) / speed)))
    speed = (contact_x - ax) / hit_at
    a: list[tuple[float, float] | None] = []
    b: list[tuple[float, float] | None] = []
    vb = speed * 0.9
    for t in range(n):
        a.append((ax + speed * min(t, hit_at), by))
        bx_t = bx + vb * max(0, t - hit_at)
        b.append((min(bx_t, w - r_b - 3), by))
    return a, b, hit_at


def render_scene(seed: int, *, num_frames: int | None = None, size: tuple[int, int] = SIZE) -> Scene:
    """One scene from `seed`: 2-4 objects with distinct colour-shape pairs and scripts."""
    rng = np.random.default_rng(seed)
    n = int(num_frames or rng.integers(16, 33))
    count = int(rng.integers(2, 5))
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = rng.choice(len(pairs), size=count, replace=False)
    objects = []
    for k, idx in enumerate(chosen):
        colour, shape = pairs[int(idx)]
        size_name = "small" if rng.random() < 0.5 else "large"
        objects.append(SceneObject(k + 1, colour, shape, size_name, str(rng.choice(ROLES))))
    hits: list[tuple[int, int, int]] = []
    collide = count >= 2 and rng.random() < 0.3
    for obj in objects:
        obj.positions = _path(rng, obj.role, n, obj.radius, size)
    if collide:
        a, b = objects[0], objects[1]
        a.role, b.role = "hitter", "hit"
        a.positions, b.positions, at = _collision(rng, n, a.radius, b.radius, size)
        hits.append((a.obj_id, b.obj_id, at))
    background = _background(rng, size)
    depth = list(rng.permutation(len(objects)))  # drawing order: later ones are in front
    light = _lighting(size)
    frames = np.empty((n, *size, 3), np.uint8)
    masks = {o.obj_id: np.zeros((n, *size), bool) for o in objects}
    for t in range(n):
        frame = background.copy()
        for k in depth:
            obj = objects[int(k)]
            pos = obj.positions[t]
            if pos is None:
                continue
            stamp = np.zeros(size, np.uint8)
            _draw(stamp, obj.shape, pos, obj.radius, 1)
            region = stamp.astype(bool)
            frame[region] = COLOURS[obj.colour]
            for other in masks.values():  # what is in front hides what is behind
                other[t] &= ~region
            masks[obj.obj_id][t] = region
        frames[t] = _lit(frame, light)
    return Scene(frames=frames, objects=objects, masks=masks, hits=hits)
