"""Each benchmark scored exactly as its official evaluation code scores it.

The expected numbers are the official scripts' own output on fixtures generated here; the
scripts were fetched into a temporary folder and run unchanged (except where noted), never
committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from revseg_agent.eval.datasets import open_benchmark, prediction_paths, write_prediction
from revseg_agent.eval.scoring import score_predictions

from .benchmark_fixtures import write_mevis_case, write_reasonvos_case, write_refdavis_case, write_revos_case

# VISA `tools/eval_revos.py` at cilinyan/VISA ec158fde9cdf87f702399c73618aa0f1127062e9, run with
# NUM_WOEKERS = 1 (the only change), on `write_revos_case`:
#   python eval_revos.py PRED --visa_exp_path GT/meta_expressions_valid_.json \
#       --visa_mask_path GT/mask_dict.json --visa_foreground_mask_path GT/mask_dict_foreground.json
# -> PRED/../revos_valid.json:
OFFICIAL_REVOS = {
    "referring": {"J": 57.734, "F": 37.296, "A": 77.762, "R": 69.626, "JF": 47.515},
    "reasoning": {"J": 53.24, "F": 41.666666666666664, "A": 79.09, "R": 59.23, "JF": 47.45333333333333},
    "overall": {"J": 55.487, "F": 39.48133333333333, "A": 78.426, "R": 64.428, "JF": 47.48416666666667},
}


def test_revos_matches_the_official_script(tmp_path: Path) -> None:
    """Referring, reasoning and overall J, F, J&F, A and R within 0.01 of the official numbers,
    on a case with perfect, dilated, eroded, shifted, empty, wrong-object and speckled
    predictions, two missing predictions (one whose video has none), no-target expressions,
    a target that leaves the frame, and two targets that overlap."""
    gt, pred = write_revos_case(tmp_path)
    summary = score_predictions(open_benchmark("revos", gt), pred)
    for subset, official in OFFICIAL_REVOS.items():
        ours = summary["subsets"][subset]
        for metric, value in official.items():
            assert ours["J&F" if metric == "JF" else metric] == pytest.approx(value, abs=0.01), (
                subset,
                metric,
            )
    overall = OFFICIAL_REVOS["overall"]
    assert (summary["J&F"], summary["A"], summary["R"]) == pytest.approx(
        (overall["JF"], overall["A"], overall["R"]), abs=0.01
    )
    assert summary["counts"] == {"scored": 9, "missing_prediction": 2, "no_target": 2}


def test_revos_predictions_are_written_as_the_official_script_reads_them(tmp_path: Path) -> None:
    """0/1 PNGs: the official A and R compare prediction values with 0/1 ground truth."""
    gt, _ = write_revos_case(tmp_path)
    bench = open_benchmark("revos", gt)
    sample = bench.samples()[0]
    masks = bench.ground_truth(sample)
    assert masks is not None
    write_prediction(bench, tmp_path / "ours", sample, masks)
    values = {
        int(v)
        for f in sample.frames
        for v in np.unique(
            np.array(Image.open(tmp_path / "ours" / sample.video / sample.exp_id / f"{f}.png"))
        )
    }
    assert values == {0, 1}


# henghuiding/MeViS `tools/eval_mevis.py` (+ `tools/metrics.py`) at
# 7c0620b9dc0ab7802747957f221674f175c8a47b, run with NUM_WOEKERS = 1 (the only change), on
# `write_mevis_case`:
#   python eval_mevis.py --mevis_exp_path GT/meta_expressions.json \
#       --mevis_mask_path GT/mask_dict.json --mevis_pred_path PRED --save_name out.json
# printed (fractions):
OFFICIAL_MEVIS = {"J": 0.508115942107052, "F": 0.33648365019305737, "J&F": 0.4222997961500547}


def test_mevis_matches_the_official_script(tmp_path: Path) -> None:
    """J, F and J&F within 0.01 (percent) of the official script, on dilated, eroded, shifted,
    empty, wrong-object and speckled predictions, overlapping targets and a video with no
    predictions at all (0 on every metric for its expressions)."""
    gt, pred = write_mevis_case(tmp_path)
    summary = score_predictions(open_benchmark("mevis", gt), pred)
    for metric, value in OFFICIAL_MEVIS.items():
        assert summary[metric] == pytest.approx(100 * value, abs=0.01), metric
    assert summary["counts"] == {"scored": 8, "missing_prediction": 2}


# showlab/VideoLISA `evaluation/reason_vos/eval_reason_vos.py` (+ `metrics.py`) at
# 146f2bca25c9bba18e754bd77b1454fa27cfb6ce (the ReasonVOS release's evaluation), run with
# NUM_WOEKERS = 1 (the only change), on `write_reasonvos_case`:
#   python eval_reason_vos.py --meta_exp_path GT/meta_expressions.json \
#       --mask_path GT/Annotations --pred_path PRED --save_name out.json
# printed (fractions):
OFFICIAL_REASONVOS = {"J": 0.5920675487637106, "F": 0.29473202265449927, "J&F": 0.44339978570910493}


def test_reasonvos_matches_the_official_script(tmp_path: Path) -> None:
    """J, F and J&F within 0.01 (percent); a missing prediction is left out, as that script does."""
    gt, pred = write_reasonvos_case(tmp_path)
    summary = score_predictions(open_benchmark("reasonvos", gt), pred)
    for metric, value in OFFICIAL_REASONVOS.items():
        assert summary[metric] == pytest.approx(100 * value, abs=0.01), metric
    assert summary["counts"] == {"scored": 8, "skipped": 1}


# Ref-DAVIS17 as VideoLISA evaluates it (showlab/VideoLISA at 146f2bc, `evaluation/refdavis/`),
# with the DAVIS 2017 toolkit (davisvideochallenge/davis2017-evaluation at ac7c43f) on the path,
# both unchanged, on `write_refdavis_case`:
#   python post_process_davis.py --src_dir PRED --davis_path REF_DAVIS       # -> PRED_processed/anno_k
#   PYTHONPATH=davis2017-evaluation python eval_davis.py --davis_path DAVIS \
#       --results_path PRED_processed/anno_k                               # k = 0..3, task unsupervised
# -> global_results-val.csv per annotator (J-Mean, F-Mean, J&F-Mean; 5 decimals):
OFFICIAL_REFDAVIS = {
    "anno_0": {"J": 86.2068, "F": 62.5, "J&F": 74.3534},
    "anno_1": {"J": 58.3611, "F": 25.0, "J&F": 41.6806},
    "anno_2": {"J": 44.63, "F": 24.8758, "J&F": 34.7529},
    "anno_3": {"J": 78.5, "F": 69.0972, "J&F": 73.7986},
}


def test_refdavis_matches_videolisa_and_the_davis_toolkit(tmp_path: Path) -> None:
    """Per annotator and averaged (what papers report), within 0.01, on a case with two objects'
    predictions overlapping (the earlier object keeps the pixel), a void band, swapped and empty
    predictions, and an object that enters after the first frame (not scored by the toolkit)."""
    refdavis, _, pred = write_refdavis_case(tmp_path)
    summary = score_predictions(open_benchmark("refdavis", refdavis), pred)
    for subset, official in OFFICIAL_REFDAVIS.items():
        ours = summary["subsets"][subset]
        assert ours["count"] == 4  # 2 + 2 objects: bike's third enters later
        for metric, value in official.items():
            assert ours[metric] == pytest.approx(value, abs=0.01), (subset, metric)
    for metric in ("J", "F", "J&F"):
        mean = float(np.mean([row[metric] for row in OFFICIAL_REFDAVIS.values()]))
        assert summary[metric] == pytest.approx(mean, abs=0.01), metric


def test_refdavis_predictions_are_where_the_official_post_processing_reads_them(tmp_path: Path) -> None:
    refdavis, _, _ = write_refdavis_case(tmp_path)
    bench = open_benchmark("refdavis", refdavis)
    sample = bench.samples()[5]
    assert (sample.video, sample.exp_id, sample.subset) == ("bike", "5", "anno_1")  # object 2, annotator 1
    masks = bench.ground_truth(sample)
    assert masks is not None
    out = tmp_path / "ours"
    write_prediction(bench, out, sample, masks)
    assert sorted(p.name for p in (out / "bike" / "5").iterdir()) == [f"{k:05d}.png" for k in range(6)]


def _referformer_ytvos(root: Path) -> tuple[Path, dict[str, dict[str, object]]]:
    """Ref-YouTube-VOS as ReferFormer prepares it: the valid expressions file also lists a test
    video (as the release's does), frames are every 5th (names step by 5)."""
    frames = ["00000", "00005", "00010"]
    videos: dict[str, dict[str, object]] = {
        name: {
            "frames": frames,
            "expressions": {str(k): {"exp": f"object {k} of {name}", "obj_id": str(k + 1)} for k in range(n)},
        }
        for name, n in (("0a1b2c", 2), ("9f8e7d", 1), ("test01", 2))
    }
    for split, names in (("valid", list(videos)), ("test", ["test01"])):
        folder = root / "meta_expressions" / split
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta_expressions.json").write_text(json.dumps({"videos": {n: videos[n] for n in names}}))
    for name in videos:
        folder = root / "valid" / "JPEGImages" / name
        folder.mkdir(parents=True, exist_ok=True)
        for frame in frames:
            Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(folder / f"{frame}.jpg")
    return root, videos


def test_refytvos_submission_has_the_layout_and_encoding_the_server_scored(tmp_path: Path) -> None:
    """The zip ReferFormer's published submissions have (its `inference_ytvos.py`: 8-bit
    grayscale 0/255 `Annotations/<video>/<exp_id>/<frame>.png` for the 202 validation videos,
    i.e. the valid expressions minus the test videos, then `zip -r submission.zip Annotations`).
    The server's own sample submission could not be read here (CodaLab's Ref-YouTube-VOS page
    is retired), so the layout is checked against that published format."""
    import zipfile

    from revseg_agent.eval.submission import write_submission

    root, videos = _referformer_ytvos(tmp_path / "ref-youtube-vos")
    bench = open_benchmark("refytvos", root)
    samples = bench.samples()
    assert sorted({s.video for s in samples}) == ["0a1b2c", "9f8e7d"]  # the test video is left out
    pred = tmp_path / "pred"
    rng = np.random.default_rng(0)
    truth = {}
    for i, sample in enumerate(samples):
        masks = rng.random((3, 20, 30)) < 0.3
        truth[sample.key] = masks
        if i == 0:  # predictions written 0/1 (ReVOS-style) are re-encoded to 0/255
            for path, m in zip(prediction_paths(bench, pred, sample), masks, strict=True):
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(m.astype(np.uint8)).save(path)
        else:
            write_prediction(bench, pred, sample, masks)
    out = tmp_path / "submission.zip"
    assert write_submission(bench, pred, out) == 3
    expected = sorted(
        f"Annotations/{video}/{exp_id}/{frame}.png"
        for video, entry in videos.items()
        if video != "test01"
        for exp_id in entry["expressions"]  # type: ignore[attr-defined]
        for frame in entry["frames"]  # type: ignore[attr-defined]
    )
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == expected
        for sample in samples:
            for k, frame in enumerate(sample.frames):
                with zf.open(f"Annotations/{sample.video}/{sample.exp_id}/{frame}.png") as fh:
                    im = Image.open(fh)
                    assert im.mode == "L" and im.size == (30, 20)
                    values = np.array(im)
                assert set(np.unique(values)) <= {0, 255}
                assert np.array_equal(values == 255, truth[sample.key][k])


def test_refytvos_submission_refuses_missing_or_misfit_frames(tmp_path: Path) -> None:
    from revseg_agent.app.cli import main

    root, _ = _referformer_ytvos(tmp_path / "ref-youtube-vos")
    bench = open_benchmark("refytvos", root)
    pred = tmp_path / "pred"
    for sample in bench.samples():
        write_prediction(bench, pred, sample, np.zeros((3, 20, 30), bool))
    sample = bench.samples()[-1]
    prediction_paths(bench, pred, sample)[1].unlink()
    args = ["submission", "--dataset", "refytvos", "--root", str(root), "--pred", str(pred)]
    assert main([*args, "--out", str(tmp_path / "s.zip")]) == 2
    assert not (tmp_path / "s.zip").exists() and not list(tmp_path.glob(".s.zip*"))  # nothing half-written
    write_prediction(bench, pred, sample, np.zeros((3, 21, 30), bool))
    assert main([*args, "--out", str(tmp_path / "s.zip")]) == 2
    write_prediction(bench, pred, sample, np.zeros((3, 20, 30), bool))
    assert main([*args, "--out", str(tmp_path / "s.zip")]) == 0 and (tmp_path / "s.zip").is_file()
