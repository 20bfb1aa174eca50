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
