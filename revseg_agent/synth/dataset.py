"""Write a synthetic reasoning-VOS world in MeViS's layout (`revseg synth`).

`OUT/<split>/` for `train`, `valid` and `test`, each a MeViS root that `revseg eval --dataset
mevis` and training recipes (`data: {kind: benchmark, dataset: mevis}`) read unchanged:
`meta_expressions.json` (with each expression's `intent`, `description` and `evidence` beside the
MeViS fields), `mask_dict.json` (COCO RLE per object and frame) and `JPEGImages/<video>/<frame>.png`
(lossless, so a mask's pixels are exactly its object's colour). Scenes are seeded from
(`seed`, split, index): the same seed writes byte-identical files, and the splits share no video.
The whole folder is written beside `OUT` and moved into place when complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revseg_agent.io import atomic_output_dir
from revseg_agent.masks_io import encode_rle
from revseg_agent.synth.queries import NO_TARGET, PHRASINGS, Query, absent_query, attribute_query, candidates
from revseg_agent.synth.scenes import render_scene

SPLITS = ("train", "valid", "test")
VERSION = 3


@dataclass(frozen=True)
class WorldSpec:
    """How many videos per split, and the share of no-target expressions."""

    seed: int = 0
    train: int = 300
    valid: int = 40
    test: int = 100
    reasoning_per_video: int = 2
    no_target_share: float = 0.05

    def count(self, split: str) -> int:
        return int(getattr(self, split))


def scene_seed(seed: int, split: str, index: int) -> int:
    """A stable 63-bit seed per (world seed, split, video): splits never share a scene."""
    digest = hashlib.sha256(f"revseg-synth/{VERSION}/{seed}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _phrasing(intent: str, split: str, rng: np.random.Generator) -> str:
    """Train and valid use all but the last phrasing; test asks half its questions in the last."""
    options = PHRASINGS[intent]
    if split == "test" and rng.random() < 0.5:
        return options[-1]
    return options[int(rng.integers(len(options) - 1))]


def video_queries(scene_seed_value: int, split: str, spec: WorldSpec) -> tuple[Any, list[Query]]:
    scene = render_scene(scene_seed_value)
    rng = np.random.default_rng(scene_seed_value ^ 0x5EED)
    makers = {k: v for k, v in candidates(scene).items() if v is not None}
    chosen = list(rng.permutation(sorted(makers)))[: spec.reasoning_per_video]
    queries = [makers[str(intent)](_phrasing(str(intent), split, rng)) for intent in chosen]
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    queries.append(attribute_query(obj, _phrasing("attribute", split, rng)))
    if rng.random() < spec.no_target_share:
        absent = absent_query(scene, rng, _phrasing(NO_TARGET, split, rng))
        if absent is not None:
            queries.append(absent)
    return scene, queries


def _write_split(root: Path, split: str, spec: WorldSpec, progress: Callable[[int], object] | None) -> int:
    videos: dict[str, Any] = {}
    mask_dict: dict[str, Any] = {}
    expressions = 0
    for index in range(spec.count(split)):
        video = f"{split}{index:05d}"
        scene, queries = video_queries(scene_seed(spec.seed, split, index), split, spec)
        folder = root / "JPEGImages" / video
        folder.mkdir(parents=True)
        names = [f"{t:05d}" for t in range(len(scene.frames))]
        for name, frame in zip(names, scene.frames, strict=True):
            if not cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
                raise OSError(f"cannot write {folder / name}.png")
        anno_of = {}
        for obj in scene.objects:
            anno = str(len(mask_dict))
            anno_of[obj.obj_id] = anno
            mask_dict[anno] = [encode_rle(m) for m in scene.masks[obj.obj_id]]
        exps = {}
        for k, q in enumerate(queries):
            exps[str(k)] = {
                "exp": q.text,
                "obj_id": list(q.targets),
                "anno_id": [anno_of[t] for t in q.targets],
                "intent": q.intent,
                "description": q.description,
                "evidence": q.evidence,
            }
        expressions += len(exps)
        videos[video] = {
            "frames": names,
            "expressions": exps,
            "objects": {
                str(o.obj_id): {"name": o.name, "role": o.role, "size": o.size} for o in scene.objects
            },
        }
        if progress is not None:
            progress(1)
    (root / "meta_expressions.json").write_text(
        json.dumps({"videos": videos}, sort_keys=True), encoding="utf-8"
    )
    (root / "mask_dict.json").write_text(json.dumps(mask_dict, sort_keys=True), encoding="utf-8")
    return expressions


def write_world(
    out: str | Path,
    spec: WorldSpec = WorldSpec(),
    *,
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Write every split under `out` (atomically, as one folder) and return its summary."""
    summary: dict[str, Any] = {
        "generator": "revseg synth",
        "version": VERSION,
        "seed": spec.seed,
        "splits": {},
    }
    with atomic_output_dir(out, overwrite=overwrite, kind="synth") as tmp:
        for split in SPLITS:
            root = tmp / split
            root.mkdir()
            count = _write_split(root, split, spec, progress)
            summary["splits"][split] = {"videos": spec.count(split), "expressions": count}
        (tmp / "world.json").write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")
    return summary
