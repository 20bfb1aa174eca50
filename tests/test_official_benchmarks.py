"""Each benchmark scored exactly as its official evaluation code scores it.

The expected numbers are the official scripts' own output on fixtures generated here; the
scripts were fetched into a temporary folder and run unchanged (except where noted), never
committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from revseg_agent.eval.datasets import open_benchmark, write_prediction
from revseg_agent.eval.scoring import score_predictions

from .benchmark_fixtures import write_mevis_case, write_reasonvos_case, write_revos_case

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
