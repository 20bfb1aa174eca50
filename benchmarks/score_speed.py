"""`revseg score` against the official MeViS and ReVOS scoring scripts: the same predictions, the
same numbers, and how long each takes, side by side in one run.

The official code is not shipped: pass the `tools/` folders of henghuiding/MeViS (7c0620b) and
cilinyan/VISA (ec158fd). Each script is copied into a temporary folder and run unchanged but for
`NUM_WOEKERS` (set to `--workers`, as `tests/test_official_benchmarks.py` records; their defaults
are 64 and 128 processes). VISA's script needs `pip install termcolor`. Both sides run as fresh
processes (interpreter start and imports counted), one after the other, on a generated set:
480p MeViS-layout clips with their masks, the same set in ReVOS's layout, and predictions that are
the ground truth shifted by a few pixels.

Usage: python benchmarks/score_speed.py --mevis-tools MeViS/tools --revos-tools VISA/tools
       [--videos 10] [--expressions-per-video 8] [--frames 30] [--workers 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from training_memory import write_set  # the generated 480p MeViS-layout set

from revseg_agent.eval.datasets import open_benchmark, write_prediction
from revseg_agent.masks_io import encode_rle


def revos_copy(mevis: Path, root: Path) -> None:
    """The same videos and masks in ReVOS's layout: referring and reasoning expressions
    alternate; the foreground file as VISA's `generate_foreground_mask.py` writes it."""
    root.mkdir(parents=True)
    (root / "JPEGImages").symlink_to((mevis / "JPEGImages").resolve())
    shutil.copy(mevis / "mask_dict.json", root / "mask_dict.json")
    meta = json.loads((mevis / "meta_expressions.json").read_text())
    bench = open_benchmark("mevis", mevis)
    foreground = {}
    for video, entry in meta["videos"].items():
        for k, expression in enumerate(entry["expressions"].values()):
            expression["type_id"] = k % 2
        union = None
        for sample in (s for s in bench.samples() if s.video == video):
            truth = bench.ground_truth(sample)
            union = truth.copy() if union is None else union | truth
        assert union is not None
        foreground[video] = {
            "masks_rle": [encode_rle(m) for m in union],
            "foreground_ratio": [float(m.mean()) for m in union],
        }
    (root / "meta_expressions_valid_.json").write_text(json.dumps(meta))
    (root / "mask_dict_foreground.json").write_text(json.dumps(foreground))


def write_predictions(dataset: str, root: Path, pred: Path, shift: int = 6) -> None:
    bench = open_benchmark(dataset, root)
    for sample in bench.samples():
        truth = bench.ground_truth(sample)
        write_prediction(bench, pred, sample, np.roll(truth, shift, axis=(1, 2)))


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def official_copy(tools: Path, script: str, workers: int, into: Path) -> Path:
    folder = into / f"official-{script}"
    shutil.copytree(tools, folder)
    code = (folder / script).read_text()
    code, count = re.subn(r"^NUM_WOEKERS = \d+", f"NUM_WOEKERS = {workers}", code, flags=re.M)
    if count != 1:
        raise SystemExit(f"{script}: NUM_WOEKERS not found (another version of the script?)")
    (folder / script).write_text(code)
    return folder


def revseg_score(dataset: str, root: Path, pred: Path, out: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "revseg_agent", "score", "--dataset", dataset, "--root", str(root)]
    seconds, _ = timed([*cmd, "--pred", str(pred), "--out", str(out)])
    return seconds, float(json.loads(out.read_text())["J&F"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mevis-tools", type=Path, required=True, help="henghuiding/MeViS tools/")
    parser.add_argument("--revos-tools", type=Path, required=True, help="cilinyan/VISA tools/")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--expressions-per-video", type=int, default=8)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1, help="the official scripts' NUM_WOEKERS")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="revseg-score-speed-"))
    mevis, revos = work / "mevis", work / "revos"
    count = write_set(mevis, args.videos, args.expressions_per_video, args.frames)
    revos_copy(mevis, revos)
    write_predictions("mevis", mevis, work / "pred-mevis")
    write_predictions("revos", revos, work / "run-revos" / "pred")

    rows = []
    ours_s, ours_jf = revseg_score("mevis", mevis, work / "pred-mevis", work / "revseg-mevis.json")
    tools = official_copy(args.mevis_tools, "eval_mevis.py", args.workers, work)
    theirs_s, out = timed(
        [
            sys.executable,
            "eval_mevis.py",
            "--mevis_exp_path",
            str(mevis / "meta_expressions.json"),
            "--mevis_mask_path",
            str(mevis / "mask_dict.json"),
            "--mevis_pred_path",
            str(work / "pred-mevis"),
            "--save_name",
            str(work / "official-mevis.json"),
        ],
        cwd=tools,
    )
    found = re.search(r"^J&F: ([0-9.]+)", out, flags=re.M)
    assert found is not None, out
    rows.append(("MeViS", ours_s, theirs_s, ours_jf, 100 * float(found.group(1))))

    ours_s, ours_jf = revseg_score("revos", revos, work / "run-revos" / "pred", work / "revseg-revos.json")
    tools = official_copy(args.revos_tools, "eval_revos.py", args.workers, work)
    theirs_s, _ = timed(
        [
            sys.executable,
            "eval_revos.py",
            str(work / "run-revos" / "pred"),
            "--visa_exp_path",
            str(revos / "meta_expressions_valid_.json"),
            "--visa_mask_path",
            str(revos / "mask_dict.json"),
            "--visa_foreground_mask_path",
            str(revos / "mask_dict_foreground.json"),
        ],
        cwd=tools,
    )
    official = json.loads((work / "run-revos" / "revos_valid.json").read_text())
    rows.append(("ReVOS", ours_s, theirs_s, ours_jf, float(official["overall"]["JF"])))

    print(
        f"{count} expressions ({args.videos} videos x {args.expressions_per_video}), {args.frames} frames at "
        f"480p; official scripts with {args.workers} worker(s); revseg score: one process"
    )
    header = ("benchmark", "revseg s", "official s", "speed-up", "revseg J&F", "official J&F")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (9, 9, 11, 9, 11, 13), strict=True)))
    for name, ours, theirs, jf, official_jf in rows:
        print(
            f"{name:>9} {ours:>9.1f} {theirs:>11.1f} {theirs / ours:>8.1f}x {jf:>11.2f} {official_jf:>13.2f}"
        )


if __name__ == "__main__":
    main()
