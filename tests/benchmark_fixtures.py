"""Write tiny benchmarks in each published layout (test helper, not part of the library)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from revseg_agent.masks_io import encode_rle

H, W = 24, 32
FRAMES = ["00000", "00005", "00010", "00015"]


def object_masks() -> dict[int, np.ndarray]:
    """Two objects over 4 frames; object 2 is absent on the last frame."""
    a = np.zeros((4, H, W), bool)
    b = np.zeros((4, H, W), bool)
    for i in range(4):
        a[i, 2:10, 2 + i : 12 + i] = True
        if i < 3:
            b[i, 14:20, 18:26] = True
    return {1: a, 2: b}


def _frames(folder: Path) -> None:
    """Frames that show the objects (red block, blue block) on a grey textured background."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    objects = object_masks()
    for k, name in enumerate(FRAMES):
        frame = rng.integers(100, 140, (H, W, 3), dtype=np.uint8)
        frame[objects[1][k]] = (30, 30, 220)  # BGR red
        frame[objects[2][k]] = (220, 60, 30)  # BGR blue
        cv2.imwrite(str(folder / f"{name}.png"), frame)


def _palette(folder: Path, objects: dict[int, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(FRAMES):
        label = np.zeros((H, W), np.uint8)
        for obj, stack in objects.items():
            label[stack[k]] = obj
        im = Image.fromarray(label, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
        im.save(folder / f"{name}.png")


# expressions: (exp_id, text, objects, ReVOS type)
EXPRESSIONS = [
    ("0", "the left block", [1], 0),
    ("1", "both blocks", [1, 2], 1),
    ("2", "the square that leaves", [2], 1),
]


def write_mevis(root: Path, *, revos: bool = False) -> Path:
    objects = object_masks()
    mask_dict = {
        str(obj): [encode_rle(m) if m.any() else None for m in stack] for obj, stack in objects.items()
    }
    expressions = {}
    for exp_id, text, objs, type_id in EXPRESSIONS:
        expressions[exp_id] = {"exp": text, "obj_id": objs, "anno_id": [str(o) for o in objs]}
        if revos:
            expressions[exp_id]["type_id"] = type_id
    if revos:
        expressions["3"] = {"exp": "the giraffe", "obj_id": [], "anno_id": [], "type_id": 2}
    meta = {"videos": {"vid1": {"frames": FRAMES, "expressions": expressions}}}
    root.mkdir(parents=True, exist_ok=True)
    name = "meta_expressions_valid_.json" if revos else "meta_expressions.json"
    (root / name).write_text(json.dumps(meta))
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    if revos:  # the video's foreground, as VISA's tools/generate_foreground_mask.py writes it
        union = np.any(np.stack(list(objects.values())), axis=0)
        fg = {
            "vid1": {
                "masks_rle": [encode_rle(m) for m in union],
                "foreground_ratio": [float(m.mean()) for m in union],
            }
        }
        (root / "mask_dict_foreground.json").write_text(json.dumps(fg))
    _frames(root / "JPEGImages" / "vid1")
    return root


def write_reasonvos(root: Path) -> Path:
    objects = object_masks()
    expressions = []
    for exp_id, text, objs, _ in EXPRESSIONS:
        if len(objs) == 1:
            expressions.append({"obj_id": objs[0], "exp_id": exp_id, "exp_text": text, "is_sent": 1})
    meta = {"videos": {"vid1": {"source": "MOSE", "frames": FRAMES, "expressions": expressions}}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    for obj, stack in objects.items():
        folder = root / "Annotations" / f"MOSE_vid1_{obj}"
        folder.mkdir(parents=True)
        for name, m in zip(FRAMES, stack, strict=True):
            cv2.imwrite(str(folder / f"{name}.png"), m.astype(np.uint8) * 255)
    _frames(root / "JPEGImages" / "vid1")
    return root


def write_refytvos(root: Path) -> Path:
    meta = {
        "videos": {
            "vid1": {
                "frames": FRAMES,
                "expressions": {
                    "0": {"exp": "the left block", "obj_id": "1"},
                    "1": {"exp": "the other block", "obj_id": "2"},
                },
            }
        }
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    _palette(root / "Annotations" / "vid1", object_masks())
    _frames(root / "JPEGImages" / "vid1")
    return root


def write_refdavis(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "valid_anno0_first_frame.txt").write_text('vid1 1 "the left block"\nvid1 2 "the other block"\n')
    _palette(root / "Annotations" / "vid1", object_masks())
    _frames(root / "JPEGImages" / "vid1")
    return root


WRITERS = {
    "mevis": write_mevis,
    "revos": lambda root: write_mevis(root, revos=True),
    "reasonvos": write_reasonvos,
    "refytvos": write_refytvos,
    "refdavis": write_refdavis,
}


def write_textured_mevis(root: Path, *, frames: int = 8, size: tuple[int, int] = (240, 320)) -> Path:
    """A MeViS-layout set on a blocky textured floor with flat-coloured shapes, JPEG-compressed:
    many tied pixel colours, where GrabCut's random initialisation changes masks. Two shapes
    moving across, three expressions (one of them both shapes)."""
    h, w = size
    rng = np.random.default_rng(7)
    names = [f"{5 * k:05d}" for k in range(frames)]
    square = np.zeros((frames, h, w), bool)
    disc = np.zeros((frames, h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    coarse = rng.integers(40, 90, (h // 8, w // 8, 3)).astype(np.uint8)
    floor = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST)
    folder = root / "JPEGImages" / "vid1"
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        square[k, 50:110, 20 + 20 * k : 80 + 20 * k] = True
        disc[k] = (yy - 165) ** 2 + (xx - (280 - 18 * k)) ** 2 < 30**2
        frame = floor.copy()
        frame[square[k]] = (30, 30, 230)  # BGR red
        frame[disc[k]] = (230, 80, 40)  # BGR blue
        cv2.imwrite(str(folder / f"{name}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    objects = {1: square, 2: disc}
    mask_dict = {str(o): [encode_rle(m) if m.any() else None for m in s] for o, s in objects.items()}
    expressions = {
        "0": {"exp": "the square", "obj_id": [1], "anno_id": ["1"]},
        "1": {"exp": "the disc", "obj_id": [2], "anno_id": ["2"]},
        "2": {"exp": "both shapes", "obj_id": [1, 2], "anno_id": ["1", "2"]},
    }
    meta = {"videos": {"vid1": {"frames": names, "expressions": expressions}}}
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    return root


# -- a ReVOS case for the official evaluation ------------------------------------------------------
# (video, exp_id, type_id, anno ids, prediction kind); kinds: see `_revos_prediction`.
REVOS_CASE = [
    ("vidA", "0", 0, [1], "perfect"),
    ("vidA", "1", 1, [2], "dilated"),
    ("vidA", "2", 1, [1, 2], "perfect"),  # the two targets overlap on every frame
    ("vidA", "3", 2, [], "empty"),  # no target
    ("vidA", "4", 0, [3], "eroded"),
    ("vidB", "0", 0, [1], "shifted"),  # object 1 leaves the frame half-way
    ("vidB", "1", 1, [2], "wrong_object"),
    ("vidB", "2", 0, [1, 2], "speckled"),
    ("vidB", "3", 1, [2], "missing"),
    ("vidB", "4", 1, [1], "empty"),
    ("vidC", "0", 0, [1], "missing"),
    ("vidC", "1", 1, [1], "perfect"),
    ("vidC", "2", 2, [], "speckled"),  # no target
]
REVOS_SIZE = (48, 64)
REVOS_FRAMES = [f"{5 * k:05d}" for k in range(6)]


def _revos_objects(video: str) -> dict[int, np.ndarray]:
    h, w = REVOS_SIZE
    n = len(REVOS_FRAMES)
    yy, xx = np.mgrid[:h, :w]
    objects: dict[int, np.ndarray] = {}
    one = np.zeros((n, h, w), bool)
    two = np.zeros((n, h, w), bool)
    three = np.zeros((n, h, w), bool)
    for k in range(n):
        if video == "vidA":
            one[k, 10:30, 5 + 3 * k : 25 + 3 * k] = True
            two[k, 20:40, 15 + 3 * k : 35 + 3 * k] = True  # overlaps object 1
            three[k] = (yy - 35) ** 2 + (xx - 50) ** 2 < 8**2
        elif video == "vidB":
            if k < 3:
                one[k, 5:20, 40 + 6 * k : 60 + 6 * k] = True
            two[k, 28:44, 4:20] = True
        else:
            one[k] = (yy - 24) ** 2 + (xx - (20 + 4 * k)) ** 2 < (6 + k) ** 2
    objects[1], objects[2] = one, two
    if video == "vidA":
        objects[3] = three
    return objects


def _revos_prediction(
    kind: str, truth: np.ndarray, other: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    if kind == "perfect":
        return truth.copy()
    if kind in {"dilated", "eroded"}:
        op = cv2.dilate if kind == "dilated" else cv2.erode
        return np.stack([op(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for m in truth])
    if kind == "shifted":
        return np.roll(truth, (3, -4), axis=(1, 2))
    if kind == "empty":
        return np.zeros_like(truth)
    if kind == "wrong_object":
        return other.copy()
    if kind == "speckled":
        return truth | (rng.random(truth.shape) < 0.05)
    raise ValueError(kind)


# MeViS: no type ids, no no-target expressions; its official script crashes on a missing
# expression folder inside a video it has, so the missing case there is a whole video (vidC).
MEVIS_CASE = [
    ("vidA", "0", 0, [1], "perfect"),
    ("vidA", "1", 0, [2], "dilated"),
    ("vidA", "2", 0, [1, 2], "perfect"),
    ("vidA", "4", 0, [3], "eroded"),
    ("vidB", "0", 0, [1], "shifted"),
    ("vidB", "1", 0, [2], "wrong_object"),
    ("vidB", "2", 0, [1, 2], "speckled"),
    ("vidB", "4", 0, [1], "empty"),
    ("vidC", "0", 0, [1], "missing"),
    ("vidC", "1", 0, [1], "missing"),
]


def write_revos_case(root: Path) -> tuple[Path, Path]:
    """A ReVOS-layout set (with `mask_dict_foreground.json` as VISA's
    `tools/generate_foreground_mask.py` writes it) and predictions of every kind in
    `REVOS_CASE`, written as 0/1 PNGs (what the official script reads). Returns (gt, pred)."""
    return _write_case(root / "ReVOS", root / "pred", REVOS_CASE, revos=True)


def write_mevis_case(root: Path) -> tuple[Path, Path]:
    """The same videos in MeViS's layout with `MEVIS_CASE`, predictions as 0/255 PNGs."""
    return _write_case(root / "mevis", root / "pred", MEVIS_CASE, revos=False)


def _write_case(
    gt_root: Path, pred_root: Path, case: list[tuple[str, str, int, list[int], str]], *, revos: bool
) -> tuple[Path, Path]:
    rng = np.random.default_rng(11)
    mask_dict: dict[str, list[dict[str, object] | None]] = {}
    foreground: dict[str, dict[str, object]] = {}
    videos: dict[str, dict[str, object]] = {}
    anno_of: dict[tuple[str, int], str] = {}
    value = 1 if revos else 255
    for video in sorted({v for v, *_ in case}):
        objects = _revos_objects(video)
        for obj, stack in objects.items():
            anno = str(len(mask_dict) + 1)
            anno_of[(video, obj)] = anno
            mask_dict[anno] = [encode_rle(m) if m.any() else None for m in stack]
        union = np.any(np.stack(list(objects.values())), axis=0)
        foreground[video] = {
            "masks_rle": [encode_rle(m) for m in union],
            "foreground_ratio": [float(m.mean()) for m in union],
        }
        folder = gt_root / "JPEGImages" / video
        folder.mkdir(parents=True, exist_ok=True)
        for k, name in enumerate(REVOS_FRAMES):
            frame = rng.integers(90, 160, (*REVOS_SIZE, 3), dtype=np.uint8)
            for obj, stack in objects.items():
                frame[stack[k]] = (40 * obj, 200 - 40 * obj, 120)
            cv2.imwrite(str(folder / f"{name}.jpg"), frame)
        expressions: dict[str, dict[str, object]] = {}
        for v, exp_id, type_id, objs, kind in case:
            if v != video:
                continue
            annos = [anno_of[(video, o)] for o in objs]
            expressions[exp_id] = {"exp": f"{kind} {exp_id}", "obj_id": objs, "anno_id": annos}
            if revos:
                expressions[exp_id]["type_id"] = type_id
            truth = np.any(np.stack([objects[o] for o in objs]), axis=0) if objs else np.zeros_like(union)
            other = objects[2] if objs != [2] else objects[1]
            if kind == "missing":
                continue
            pred = _revos_prediction(kind, truth, other, rng)
            out = pred_root / video / exp_id
            out.mkdir(parents=True, exist_ok=True)
            for name, m in zip(REVOS_FRAMES, pred, strict=True):
                cv2.imwrite(str(out / f"{name}.png"), m.astype(np.uint8) * np.uint8(value))
        videos[video] = {"frames": REVOS_FRAMES, "expressions": expressions}
    name = "meta_expressions_valid_.json" if revos else "meta_expressions.json"
    (gt_root / name).write_text(json.dumps({"videos": videos}))
    (gt_root / "mask_dict.json").write_text(json.dumps(mask_dict))
    if revos:
        (gt_root / "mask_dict_foreground.json").write_text(json.dumps(foreground))
    return gt_root, pred_root


# ReasonVOS: one target object per expression; missing predictions are left out by its script.
REASONVOS_CASE = [
    ("vidA", "0", [1], "perfect"),
    ("vidA", "1", [2], "dilated"),
    ("vidA", "2", [3], "eroded"),
    ("vidA", "3", [1], "wrong_object"),
    ("vidB", "0", [1], "shifted"),
    ("vidB", "1", [2], "speckled"),
    ("vidB", "2", [2], "missing"),
    ("vidB", "3", [1], "empty"),
    ("vidC", "0", [1], "dilated"),
]


def write_reasonvos_case(root: Path) -> tuple[Path, Path]:
    """ReasonVOS's layout (`meta_expressions.json` with a list of expressions per video,
    `Annotations/<source>_<video>_<obj>/<frame>.png` at 0/255) with `REASONVOS_CASE`'s
    predictions at `PRED/<source>_<video>_<obj>/<exp_id>/<frame>.png`. Returns (gt, pred)."""
    gt_root, pred_root = root / "ReasonVOS", root / "pred"
    rng = np.random.default_rng(5)
    videos: dict[str, dict[str, object]] = {}
    for video in sorted({v for v, *_ in REASONVOS_CASE}):
        objects = _revos_objects(video)
        for obj, stack in objects.items():
            folder = gt_root / "Annotations" / f"MOSE_{video}_{obj}"
            folder.mkdir(parents=True, exist_ok=True)
            for name, m in zip(REVOS_FRAMES, stack, strict=True):
                cv2.imwrite(str(folder / f"{name}.png"), m.astype(np.uint8) * 255)
        frames_dir = gt_root / "JPEGImages" / video
        frames_dir.mkdir(parents=True, exist_ok=True)
        for name in REVOS_FRAMES:
            cv2.imwrite(
                str(frames_dir / f"{name}.jpg"), rng.integers(90, 160, (*REVOS_SIZE, 3), dtype=np.uint8)
            )
        expressions = []
        for v, exp_id, objs, kind in REASONVOS_CASE:
            if v != video:
                continue
            (obj,) = objs
            expressions.append(
                {"obj_id": obj, "exp_id": exp_id, "exp_text": f"{kind} {exp_id}", "is_sent": 1}
            )
            if kind == "missing":
                continue
            other = objects[2] if obj != 2 else objects[1]
            pred = _revos_prediction(kind, objects[obj], other, rng)
            out = pred_root / f"MOSE_{video}_{obj}" / exp_id
            out.mkdir(parents=True, exist_ok=True)
            for name, m in zip(REVOS_FRAMES, pred, strict=True):
                cv2.imwrite(str(out / f"{name}.png"), m.astype(np.uint8) * 255)
        videos[video] = {"source": "MOSE", "frames": REVOS_FRAMES, "expressions": expressions}
    (gt_root / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    return gt_root, pred_root


# Ref-DAVIS17 in ReferFormer's layout: per video, objects and, per object, the four annotators'
# prediction kinds (expression i = object i // 4, annotator i % 4). "bike" has a void band and a
# third object that appears only after the first frame (the toolkit does not score it).
REFDAVIS_FRAMES = [f"{k:05d}" for k in range(6)]
REFDAVIS_CASE = {
    "blackswan": [
        ["perfect", "dilated", "shifted", "perfect"],
        ["perfect", "wrong_object", "empty", "eroded"],
    ],
    "bike": [
        ["eroded", "perfect", "speckled", "wrong_object"],
        ["dilated", "dilated", "perfect", "empty"],
        ["perfect", "perfect", "shifted", "empty"],
    ],
}


def _refdavis_objects(video: str) -> dict[int, np.ndarray]:
    objects = _revos_objects("vidA" if video == "blackswan" else "vidB")
    if video == "bike":
        late = np.zeros_like(objects[1])
        late[2:, 30:44, 44:60] = True  # enters on frame 2
        objects[3] = late
    return {k: v[: len(REFDAVIS_FRAMES)] for k, v in objects.items() if k <= len(REFDAVIS_CASE[video])}


def write_refdavis_case(root: Path) -> tuple[Path, Path, Path]:
    """Ref-DAVIS17 as ReferFormer's preparation lays it out (`meta_expressions/valid/
    meta_expressions.json`, `valid/{JPEGImages,Annotations}`), the same videos in the DAVIS 2017
    toolkit's layout (`Annotations_unsupervised/480p`, `ImageSets/2017/val.txt`), and 0/255
    predictions at `PRED/<video>/<exp_id>/<frame>.png`. Returns (ref-davis, DAVIS, pred)."""
    refdavis, davis, pred_root = root / "ref-davis", root / "DAVIS", root / "pred"
    rng = np.random.default_rng(17)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)
    videos: dict[str, dict[str, object]] = {}
    for video, per_object in REFDAVIS_CASE.items():
        objects = _refdavis_objects(video)
        labels = np.zeros((len(REFDAVIS_FRAMES), *REVOS_SIZE), np.uint8)
        for obj, stack in objects.items():
            labels[stack & (labels == 0)] = obj
        if video == "bike":
            labels[:, :3, :] = 255  # void
        for folder in (
            refdavis / "valid" / "Annotations" / video,
            davis / "Annotations_unsupervised" / "480p" / video,
        ):
            folder.mkdir(parents=True, exist_ok=True)
            for name, label in zip(REFDAVIS_FRAMES, labels, strict=True):
                im = Image.fromarray(label, mode="P")
                im.putpalette(palette)
                im.save(folder / f"{name}.png")
        for folder in (refdavis / "valid" / "JPEGImages" / video, davis / "JPEGImages" / "480p" / video):
            folder.mkdir(parents=True, exist_ok=True)
            for name in REFDAVIS_FRAMES:
                cv2.imwrite(
                    str(folder / f"{name}.jpg"), rng.integers(90, 160, (*REVOS_SIZE, 3), dtype=np.uint8)
                )
        expressions: dict[str, dict[str, str]] = {}
        for index, kinds in enumerate(per_object):
            obj = index + 1
            other = objects[2] if obj != 2 else objects[1]
            for anno, kind in enumerate(kinds):
                exp_id = str(len(expressions))
                expressions[exp_id] = {"exp": f"{kind} object {obj} by annotator {anno}", "obj_id": str(obj)}
                pred = _revos_prediction(kind, objects[obj], other, rng)
                out = pred_root / video / exp_id
                out.mkdir(parents=True, exist_ok=True)
                for name, m in zip(REFDAVIS_FRAMES, pred, strict=True):
                    cv2.imwrite(str(out / f"{name}.png"), m.astype(np.uint8) * 255)
        videos[video] = {"expressions": expressions, "frames": REFDAVIS_FRAMES}
    meta = refdavis / "meta_expressions" / "valid"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "meta_expressions.json").write_text(json.dumps({"videos": videos}))
    sets = davis / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("".join(f"{v}\n" for v in REFDAVIS_CASE))
    return refdavis, davis, pred_root
