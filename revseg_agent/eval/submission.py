"""Server submissions: Ref-YouTube-VOS is scored only by its evaluation server.

The zip holds `Annotations/<video>/<exp_id>/<frame>.png` for every expression of every
validation video and every frame its `meta_expressions.json` lists, as 8-bit grayscale PNGs of
0 and 255 at the frame's size: the layout and encoding of ReferFormer's published submissions,
which the server scored (its `inference_ytvos.py` writes `Image.fromarray(mask * 255).convert('L')`
per frame, then `zip -r submission.zip Annotations`). Masks are re-encoded on the way in, so
predictions written as 0/1 or palette PNGs go in canonical; a missing frame or a wrong size is
an error naming it (the server would score it 0 or refuse the file). Written atomically.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from revseg_agent.errors import InputError
from revseg_agent.eval.datasets import Benchmark, RefYTVOSBenchmark, prediction_paths
from revseg_agent.masks_io import read_mask_png
from revseg_agent.video import frame_files

SUBMISSION_DATASETS = ("refytvos",)


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_submission(
    bench: Benchmark, pred_root: Path, out_zip: Path, *, progress: Callable[[int], object] | None = None
) -> int:
    """Zip the predictions for the server; returns the number of expressions packed."""
    if not isinstance(bench, RefYTVOSBenchmark):
        raise InputError(
            f"{bench.name} is scored locally (`revseg score`); submissions are for {SUBMISSION_DATASETS}"
        )
    samples = bench.samples()
    sizes: dict[str, tuple[int, int]] = {}
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_zip.name}.", suffix=".tmp", dir=out_zip.parent)
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for sample in samples:
                if sample.video not in sizes:
                    frames = frame_files(bench.frames_dir(sample), (".jpg", ".jpeg", ".png"))
                    first = frames.get(sample.frames[0])
                    if first is None:
                        where = bench.frames_dir(sample)
                        raise InputError(f"frame {sample.frames[0]} of {sample.video} not found in {where}")
                    with Image.open(first) as im:
                        sizes[sample.video] = (im.height, im.width)
                height, width = sizes[sample.video]
                for frame, path in zip(
                    sample.frames, prediction_paths(bench, pred_root, sample), strict=True
                ):
                    if not path.is_file():
                        raise InputError(f"prediction missing for {sample.key} frame {frame}: {path}")
                    mask = read_mask_png(path)
                    if mask.shape != (height, width):
                        raise InputError(
                            f"{path} is {mask.shape[1]}x{mask.shape[0]}, the frame is {width}x{height}"
                        )
                    zf.writestr(f"Annotations/{sample.video}/{sample.exp_id}/{frame}.png", _png(mask))
                if progress is not None:
                    progress(1)
        tmp.chmod(0o644)
        tmp.replace(out_zip)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(samples)


def zip_predictions(pred_root: Path, path: Path) -> Path:
    """Every prediction PNG of a folder zipped as is (paths relative to it: what the MeViS and
    Ref-YouTube-VOS servers take), written atomically; an evaluation run's `submission.zip`.
    `write_submission` is the checked version for Ref-YouTube-VOS (complete, canonical)."""
    tmp = path.with_name(f".{path.name}.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed
        for file in sorted(pred_root.rglob("*.png")):
            archive.write(file, file.relative_to(pred_root).as_posix())
    tmp.replace(path)
    return path
