"""The five benchmarks' published layouts, read into one typed sample model and written back.

Each adapter knows where a benchmark keeps frames, expressions and ground truth, and where its
official scripts (or servers) expect predictions:

- mevis: `meta_expressions.json` + `mask_dict.json` (COCO RLE per anno id and frame);
  predictions `PRED/<video>/<exp_id>/<frame>.png`.
- revos: `meta_expressions_<split>_.json` + `mask_dict.json`; predictions as MeViS.
- reasonvos: `meta_expressions.json` + `Annotations/<source>_<video>_<obj>/<frame>.png`;
  predictions `PRED/<source>_<video>_<obj>/<exp_id>/<frame>.png`.
- refytvos: `meta_expressions.json` (+ palette `Annotations/<video>/<frame>.png`, train split);
  predictions `PRED/Annotations/<video>/<exp_id>/<frame>.png` (zip it for the server).
- refdavis: ReferFormer's `meta_expressions/valid/meta_expressions.json` + `valid/`, or
  `<set>.txt` lines `<video> <obj_id> "<text>"` + palette `Annotations/<video>/...`;
  predictions `PRED/<video>/<exp_id>/<frame>.png` (meta) or `PRED/<set>/<video>/<exp_id>/...`.

Ground truth of an expression is the union of its target objects' masks (the benchmarks' rule).
Ids become file names, so any id that is not a plain file name is rejected (never sanitised into
another benchmark's id silently).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from revseg_agent.errors import RevsegError
from revseg_agent.masks_io import decode_rle, read_mask_png, rle_area, write_mask_png
from revseg_agent.video import frame_files, natural_key

DATASETS: tuple[str, ...] = ("mevis", "revos", "reasonvos", "refytvos", "refdavis")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=-]*$")

#: ReVOS's `type_id`.
REVOS_TYPES = {0: "referring", 1: "reasoning", 2: "no_target"}


class DatasetError(RevsegError):
    """A benchmark's files are missing, corrupt or inconsistent."""


def check_id(value: str, what: str) -> str:
    """Ids become folder and file names: refuse anything that could escape or alias a folder."""
    if not _SAFE_ID.match(value) or ".." in value:
        raise DatasetError(f"unsafe {what} {value!r}: ids must be plain file names")
    return value


class Sample(BaseModel):
    """One (video, expression) pair of a benchmark."""

    dataset: str
    video: str
    exp_id: str
    text: str
    frames: list[str]
    subset: str | None = None
    targets: list[str] = Field(default_factory=list)  # anno ids / object ids / annotation folders
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """A unique, file-name-safe key of the sample (`<video>__<exp_id>`)."""
        return f"{self.video}__{self.exp_id}"


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"corrupt JSON in {path}: {exc}") from exc


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise DatasetError(message)


class Benchmark(Protocol):
    name: str
    root: Path

    def samples(self) -> list[Sample]: ...

    #: The value a prediction PNG stores for foreground (0 elsewhere), as the official code reads it.
    prediction_value: int

    def ground_truth(self, sample: Sample) -> np.ndarray | None:
        """Union target masks `(frames, H, W)`, or None when the split has no public ground truth."""
        ...

    def frames_dir(self, sample: Sample) -> Path: ...

    def prediction_dir(self, pred_root: Path, sample: Sample) -> Path: ...


def prediction_paths(bench: Benchmark, pred_root: Path, sample: Sample) -> list[Path]:
    folder = bench.prediction_dir(pred_root, sample)
    return [folder / f"{frame}.png" for frame in sample.frames]


def read_prediction(
    bench: Benchmark, pred_root: Path, sample: Sample, size: tuple[int, int]
) -> np.ndarray | None:
    """The prediction stack, or None when its folder is missing. Missing frames or wrong sizes
    are errors: they would otherwise turn into silently wrong numbers."""
    folder = bench.prediction_dir(pred_root, sample)
    if not folder.is_dir():
        return None
    masks = []
    for path in prediction_paths(bench, pred_root, sample):
        if not path.is_file():
            raise DatasetError(f"prediction frame missing: {path}")
        m = read_mask_png(path)
        if m.shape != size:
            raise DatasetError(
                f"prediction {path} is {m.shape[1]}x{m.shape[0]}, ground truth is {size[1]}x{size[0]}"
            )
        masks.append(m)
    return np.stack(masks)


def write_prediction(bench: Benchmark, pred_root: Path, sample: Sample, masks: np.ndarray) -> None:
    if len(masks) != len(sample.frames):
        raise ValueError(f"{len(masks)} masks for {len(sample.frames)} frames of {sample.key}")
    for path, mask in zip(prediction_paths(bench, pred_root, sample), masks, strict=True):
        write_mask_png(path, mask, value=bench.prediction_value)


# -- MeViS and ReVOS (same schema) ------------------------------------------------------------
class MevisBenchmark:
    """MeViS: `meta_expressions.json`, `mask_dict.json`, `JPEGImages/<video>/<frame>.jpg`."""

    name = "mevis"
    meta_name = "meta_expressions.json"
    prediction_value = 255

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root) if split is None or not (Path(root) / split).is_dir() else Path(root) / split
        self.split = split
        self._masks: dict[str, Any] | None = None
        self._foreground: dict[str, Any] | None = None

    def _meta_path(self) -> Path:
        return self.root / self.meta_name

    def _subset(self, expression: dict[str, Any]) -> str | None:
        return None

    def samples(self) -> list[Sample]:
        meta = _load_json(self._meta_path())
        _expect(
            isinstance(meta, dict) and isinstance(meta.get("videos"), dict),
            f"{self._meta_path()}: no 'videos'",
        )
        out = []
        for video, entry in sorted(meta["videos"].items()):
            check_id(video, "video id")
            frames = entry.get("frames")
            _expect(isinstance(frames, list) and bool(frames), f"video {video}: no frame list")
            for exp_id, exp in sorted(
                entry.get("expressions", {}).items(), key=lambda kv: natural_key(kv[0])
            ):
                check_id(str(exp_id), "expression id")
                anno = exp.get("anno_id", [])
                out.append(
                    Sample(
                        dataset=self.name,
                        video=video,
                        exp_id=str(exp_id),
                        text=str(exp.get("exp", "")),
                        frames=[str(f) for f in frames],
                        subset=self._subset(exp),
                        targets=[str(a) for a in (anno if isinstance(anno, list) else [anno])],
                        # the synthetic world's reasoning annotations ride along (MeViS has none)
                        extra={"obj_id": exp.get("obj_id")}
                        | {k: exp[k] for k in ("intent", "description", "evidence") if k in exp}
                        | ({"objects": entry["objects"]} if "objects" in entry else {}),
                    )
                )
        return out

    def _mask_dict(self) -> dict[str, Any]:
        if self._masks is None:
            data = _load_json(self.root / "mask_dict.json")
            _expect(isinstance(data, dict), f"{self.root / 'mask_dict.json'} is not an object")
            self._masks = data
        return self._masks

    def ground_truth(self, sample: Sample) -> np.ndarray | None:
        return self.target_sum(sample) > 0

    def has_target(self, sample: Sample) -> bool:
        """Whether the expression has a target on some frame, from the RLEs' runs (no pixel is
        decoded); a missing or misfit annotation is a `DatasetError`, as when it is read."""
        area = 0
        for rles in self._target_rles(sample):
            area += sum(rle_area(rle) for rle in rles if rle is not None)
        return area > 0

    def _target_rles(self, sample: Sample) -> list[list[Any]]:
        """Each target's per-frame RLEs (None: empty frame), checked against the frame list."""
        masks = self._mask_dict()
        out = []
        for anno in sample.targets:
            _expect(anno in masks, f"{sample.key}: anno_id {anno} not in mask_dict.json")
            rles = masks[anno]
            _expect(
                isinstance(rles, list) and len(rles) == len(sample.frames),
                f"{sample.key}: anno_id {anno} has {len(rles) if isinstance(rles, list) else '?'} masks "
                f"for {len(sample.frames)} frames",
            )
            out.append(rles)
        return out

    def target_masks(self, sample: Sample) -> list[np.ndarray]:
        """Each target object's own mask stack `(frames, H, W)` (multi-object rewards match them)."""
        single = [sample.model_copy(update={"targets": [anno]}) for anno in sample.targets]
        return [self.target_sum(s) > 0 for s in single]

    def target_sum(self, sample: Sample) -> np.ndarray:
        """The targets' masks summed per pixel in uint8, `(frames, H, W)`: what the official
        MeViS/ReVOS scripts build (`gt_masks[k] += decode(rle)`; 2 where two targets overlap)."""
        union: np.ndarray | None = None
        size: tuple[int, int] | None = None
        for rles in self._target_rles(sample):
            for k, rle in enumerate(rles):
                if rle is None:
                    continue
                shape = tuple(int(v) for v in rle["size"])
                _expect(size is None or shape == size, f"{sample.key}: RLE size {shape} differs from {size}")
                size = shape  # type: ignore[assignment]
                if union is None:
                    union = np.zeros((len(sample.frames), *shape), np.uint8)
                union[k] += decode_rle(rle).astype(np.uint8)
        if union is None:
            h, w = self._frame_size(sample)
            union = np.zeros((len(sample.frames), h, w), np.uint8)
        return union

    def _frame_size(self, sample: Sample) -> tuple[int, int]:
        files = _benchmark_frames(self.frames_dir(sample))
        if sample.frames and sample.frames[0] in files:
            with Image.open(files[sample.frames[0]]) as im:
                return im.height, im.width
        raise DatasetError(f"{sample.key}: every target is empty and no frame gives the size")

    def frames_dir(self, sample: Sample) -> Path:
        return self.root / "JPEGImages" / sample.video

    def prediction_dir(self, pred_root: Path, sample: Sample) -> Path:
        return pred_root / sample.video / sample.exp_id


class RevosBenchmark(MevisBenchmark):
    """ReVOS: MeViS's schema plus `type_id` (referring / reasoning / no-target)."""

    name = "revos"
    #: The official script compares prediction values with 0/1 ground truth (A, R): 0/1 PNGs.
    prediction_value = 1

    def foreground(self, sample: Sample) -> np.ndarray:
        """The video's foreground per frame (`mask_dict_foreground.json`, uint8), the denominator
        of the official robustness R."""
        if self._foreground is None:
            path = self.root / "mask_dict_foreground.json"
            if not path.is_file():
                raise DatasetError(f"ReVOS robustness R needs {path} (shipped with ReVOS)")
            self._foreground = _load_json(path)
        entry: Any = self._foreground.get(sample.video) if isinstance(self._foreground, dict) else None
        _expect(isinstance(entry, dict) and "masks_rle" in entry, f"{sample.video}: no foreground masks")
        assert entry is not None
        frames = []
        for rle in entry["masks_rle"]:  # one RLE, or a list of them (summed, as the script does)
            parts = rle if isinstance(rle, list) else [rle]
            frames.append(np.sum([decode_rle(r).astype(np.uint8) for r in parts], axis=0))
        _expect(len(frames) == len(sample.frames), f"{sample.video}: foreground frame count differs")
        return np.stack(frames).astype(np.uint8)

    def _meta_path(self) -> Path:
        split = self.split or "valid"
        return self.root / f"meta_expressions_{split}_.json"

    def _subset(self, expression: dict[str, Any]) -> str | None:
        type_id = expression.get("type_id")
        if not isinstance(type_id, int) or type_id not in REVOS_TYPES:
            raise DatasetError(f"ReVOS: unknown type_id {type_id!r}")
        return REVOS_TYPES[type_id]


# -- ReasonVOS ------------------------------------------------------------------------------------
class ReasonVOSBenchmark:
    """ReasonVOS: expressions as a list per video; one PNG folder per target object."""

    name = "reasonvos"
    prediction_value = 255

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        self.root = Path(root)

    def samples(self) -> list[Sample]:
        path = self.root / "meta_expressions.json"
        meta = _load_json(path)
        _expect(isinstance(meta, dict) and isinstance(meta.get("videos"), dict), f"{path}: no 'videos'")
        out = []
        for video, entry in sorted(meta["videos"].items()):
            check_id(video, "video id")
            source = check_id(str(entry.get("source", "")), "source")
            for exp in entry.get("expressions", []):
                target = check_id(f"{source}_{video}_{exp['obj_id']}", "annotation folder")
                out.append(
                    Sample(
                        dataset=self.name,
                        video=video,
                        exp_id=check_id(str(exp["exp_id"]), "expression id"),
                        text=str(exp.get("exp_text", "")),
                        frames=[str(f) for f in entry["frames"]],
                        subset=source,
                        targets=[target],
                        extra={"is_sent": exp.get("is_sent"), "source": source},
                    )
                )
        return out

    def has_target(self, sample: Sample) -> bool:
        """Whether the target's annotation folder holds every frame (listed, not decoded)."""
        folder = self.root / "Annotations" / sample.targets[0]
        if not folder.is_dir():
            return False
        missing = [f for f in sample.frames if f not in _benchmark_frames(folder)]
        _expect(not missing, f"{folder}: ground-truth frames missing: {missing[:3]}")
        return True

    def ground_truth(self, sample: Sample) -> np.ndarray | None:
        folder = self.root / "Annotations" / sample.targets[0]
        if not folder.is_dir():
            return None
        files = _benchmark_frames(folder)
        missing = [f for f in sample.frames if f not in files]
        _expect(not missing, f"{folder}: ground-truth frames missing: {missing[:3]}")
        return np.stack([read_mask_png(files[f]) for f in sample.frames])

    def frames_dir(self, sample: Sample) -> Path:
        return self.root / "JPEGImages" / sample.video

    def prediction_dir(self, pred_root: Path, sample: Sample) -> Path:
        return pred_root / sample.targets[0] / sample.exp_id


# -- Ref-YouTube-VOS and Ref-DAVIS17 (palette annotations with object ids) --------------------------
def _palette_object(files: dict[str, Path], frames: list[str], obj_id: int, folder: Path) -> np.ndarray:
    missing = [f for f in frames if f not in files]
    _expect(not missing, f"{folder}: ground-truth frames missing: {missing[:3]}")
    stack = []
    for f in frames:
        with Image.open(files[f]) as im:
            stack.append(np.array(im) == obj_id)
    return np.stack(stack)


class _PaletteAnnotations:
    """Ground truth as palette PNGs `Annotations/<video>/<frame>.png` whose values are object ids."""

    prediction_value = 255

    root: Path

    def has_target(self, sample: Sample) -> bool:
        """Whether the video's annotation folder holds every frame (listed, not decoded)."""
        folder = self.root / "Annotations" / sample.video
        if not folder.is_dir():
            return False
        missing = [f for f in sample.frames if f not in _benchmark_frames(folder)]
        _expect(not missing, f"{folder}: ground-truth frames missing: {missing[:3]}")
        return True

    def ground_truth(self, sample: Sample) -> np.ndarray | None:
        folder = self.root / "Annotations" / sample.video
        if not folder.is_dir():
            return None
        return _palette_object(_benchmark_frames(folder), sample.frames, int(sample.targets[0]), folder)

    def frames_dir(self, sample: Sample) -> Path:
        return self.root / "JPEGImages" / sample.video


class RefYTVOSBenchmark(_PaletteAnnotations):
    """Ref-YouTube-VOS: scored by its server; local ground truth exists for the train split only.

    Layouts: ReferFormer's preparation (`meta_expressions/<split>/meta_expressions.json`,
    frames in `<split>/JPEGImages/<video>`; `split` defaults to `valid`), where the validation
    expressions file also lists the test videos, so the videos of
    `meta_expressions/test/meta_expressions.json` are left out (the 202 validation videos, as
    ReferFormer's inference does); or a folder holding `meta_expressions.json` itself.
    Predictions: `PRED/Annotations/<video>/<exp_id>/<frame>.png`, 8-bit 0/255 grayscale, the
    layout of the submissions the server scored (`revseg submission` zips it).
    """

    name = "refytvos"

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        root = Path(root)
        nested = root / "meta_expressions" / (split or "valid") / "meta_expressions.json"
        self.meta_path = nested if nested.is_file() else None
        self.excluded: set[str] = set()
        if self.meta_path is not None:
            self.root = root / (split or "valid")
            test = root / "meta_expressions" / "test" / "meta_expressions.json"
            if (split or "valid") == "valid" and test.is_file():
                self.excluded = set(_load_json(test).get("videos", {}))
        else:
            self.root = root if split is None or not (root / split).is_dir() else root / split

    def samples(self) -> list[Sample]:
        path = self.meta_path or self.root / "meta_expressions.json"
        meta = _load_json(path)
        _expect(isinstance(meta, dict) and isinstance(meta.get("videos"), dict), f"{path}: no 'videos'")
        out = []
        for video, entry in sorted(meta["videos"].items()):
            if video in self.excluded:
                continue
            check_id(video, "video id")
            for exp_id, exp in sorted(entry["expressions"].items(), key=lambda kv: natural_key(kv[0])):
                out.append(
                    Sample(
                        dataset=self.name,
                        video=video,
                        exp_id=check_id(str(exp_id), "expression id"),
                        text=str(exp.get("exp", "")),
                        frames=[str(f) for f in entry["frames"]],
                        targets=[str(exp.get("obj_id"))],
                    )
                )
        return out

    def prediction_dir(self, pred_root: Path, sample: Sample) -> Path:
        return pred_root / "Annotations" / sample.video / sample.exp_id


class RefDAVISBenchmark(_PaletteAnnotations):
    """Ref-DAVIS17, in either of its two layouts.

    - The layout ReferFormer's preparation writes and VideoLISA / Sa2VA evaluate from (what
      papers report): `meta_expressions/valid/meta_expressions.json` with four expressions per
      object, object-major (expression `i` of a video is annotator `i % 4`'s expression of its
      `i // 4`-th object), frames in `valid/JPEGImages/<video>`, palette ground truth in
      `valid/Annotations/<video>`. Sets `anno_0`..`anno_3`; predictions at
      `PRED/<video>/<exp_id>/<frame>.png`, the input of VideoLISA's `post_process_davis.py`.
    - Khoreva et al.'s text files `<set>.txt` of `<video> <obj_id> "<expression>"` lines beside
      `JPEGImages/` and `Annotations/`; `split` names the set (the file stem); predictions at
      `PRED/<set>/<video>/<exp_id>/<frame>.png`.

    Headline scores follow the DAVIS 2017 toolkit's unsupervised protocol per set, averaged over
    the sets (`refdavis.py`); per-expression scores are diagnostics.
    """

    name = "refdavis"
    #: Where ReferFormer's preparation puts the expressions, relative to the root.
    META = Path("meta_expressions") / "valid" / "meta_expressions.json"
    ANNOTATORS = 4

    def __init__(self, root: str | Path, split: str | None = None) -> None:
        root = Path(root)
        self.meta_path: Path | None = root / self.META if (root / self.META).is_file() else None
        #: frames and annotations live under `valid/` in the meta layout
        self.root = root / "valid" if self.meta_path is not None else root
        self.split = split

    def _set_files(self) -> list[Path]:
        if self.split:
            path = self.root / f"{self.split}.txt"
            _expect(path.is_file(), f"missing expression set {path}")
            return [path]
        files = sorted(self.root.glob("*.txt"))
        _expect(bool(files), f"no expression set (*.txt) in {self.root}")
        return files

    def _frames(self, video: str, where: str) -> list[str]:
        frames = sorted(_benchmark_frames(self.root / "JPEGImages" / video))
        _expect(bool(frames), f"{where}: no frames in {self.root / 'JPEGImages' / video}")
        return frames

    def samples(self) -> list[Sample]:
        if self.meta_path is not None:
            return self._meta_samples(self.meta_path)
        out = []
        for set_file in self._set_files():
            counters: dict[str, int] = {}
            for n, line in enumerate(set_file.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    video, obj_id, *rest = shlex.split(line)
                    text = " ".join(rest)
                    int(obj_id)
                except ValueError as exc:
                    raise DatasetError(f'{set_file}:{n}: expected <video> <obj_id> "<expression>"') from exc
                check_id(video, "video id")
                exp_id = str(counters.get(video, 0))
                counters[video] = counters.get(video, 0) + 1
                out.append(
                    Sample(
                        dataset=self.name,
                        video=video,
                        exp_id=exp_id,
                        text=text,
                        frames=self._frames(video, f"{set_file}:{n}"),
                        subset=set_file.stem,
                        targets=[obj_id],
                    )
                )
        return out

    def _meta_samples(self, path: Path) -> list[Sample]:
        meta = _load_json(path)
        _expect(isinstance(meta, dict) and isinstance(meta.get("videos"), dict), f"{path}: no 'videos'")
        out = []
        for video, entry in sorted(meta["videos"].items()):
            check_id(video, "video id")
            expressions = list(entry["expressions"].items())  # file order: object-major
            _expect(
                len(expressions) % self.ANNOTATORS == 0,
                f"{path}: {video} has {len(expressions)} expressions, not {self.ANNOTATORS} per object",
            )
            frames = self._frames(video, str(path))
            for i, (exp_id, exp) in enumerate(expressions):
                subset = f"anno_{i % self.ANNOTATORS}"
                if self.split and self.split != subset:
                    continue
                out.append(
                    Sample(
                        dataset=self.name,
                        video=video,
                        exp_id=check_id(str(exp_id), "expression id"),
                        text=str(exp.get("exp", "")),
                        frames=frames,
                        subset=subset,
                        targets=[str(exp.get("obj_id", i // self.ANNOTATORS + 1))],
                    )
                )
        return out

    def prediction_dir(self, pred_root: Path, sample: Sample) -> Path:
        if self.meta_path is not None:
            return pred_root / sample.video / sample.exp_id
        return pred_root / (sample.subset or "set") / sample.video / sample.exp_id


def _benchmark_frames(folder: Path) -> dict[str, Path]:
    return frame_files(folder, FRAME_SUFFIXES)


_ADAPTERS: dict[str, type] = {
    "mevis": MevisBenchmark,
    "revos": RevosBenchmark,
    "reasonvos": ReasonVOSBenchmark,
    "refytvos": RefYTVOSBenchmark,
    "refdavis": RefDAVISBenchmark,
}


def has_target(bench: Benchmark, sample: Sample) -> bool:
    """Whether `sample` has a target to ground, checked as cheaply as the layout allows (a
    layout without `has_target` decodes its ground truth once)."""
    check = getattr(bench, "has_target", None)
    if check is not None:
        return bool(check(sample))
    gt = bench.ground_truth(sample)
    return gt is not None and bool(gt.any())


def open_benchmark(name: str, root: str | Path, split: str | None = None) -> Benchmark:
    if name not in _ADAPTERS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if not Path(root).is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    bench: Benchmark = _ADAPTERS[name](root, split)
    return bench
