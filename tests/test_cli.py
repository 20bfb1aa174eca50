"""`revseg segment`: outputs, exit codes, nothing half-written on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from revseg_agent.app.cli import EXIT_BAD_INPUT, EXIT_CHAIN_FAILED, main
from revseg_agent.graphs.traces import Trace
from revseg_agent.io import OUTPUT_MARKER
from revseg_agent.masks_io import read_masks_json
from revseg_agent.synth.square_clip import DEMO_FRAMES

pytestmark = pytest.mark.slow
QUERY = "the red square that moves right"


def _segment(video: Path, out: Path, policy: Path, *extra: str) -> int:
    return main(
        [
            "segment",
            str(video),
            QUERY,
            "--out",
            str(out),
            "--policy",
            str(policy),
            "--tracker",
            "classical",
            "--device",
            "cpu",
            "--max-new-tokens",
            "16",
            *extra,
        ]
    )


def test_writes_every_output(
    demo_clip: Path, tiny_policy_dir: Path, tmp_path: Path, bars: list[tuple[str, int, int | None]]
) -> None:
    out = tmp_path / "out"
    assert (
        _segment(demo_clip, out, tiny_policy_dir, "--on-parse-failure", "fallback", "--max-attempts", "1")
        == 0
    )
    pngs = sorted((out / "masks").iterdir())
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(DEMO_FRAMES)]
    stack = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in pngs])
    assert stack.dtype == np.uint8 and set(np.unique(stack)) <= {0, 255} and stack.any()
    np.testing.assert_array_equal(read_masks_json(out / "masks.json").masks, stack == 255)
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == DEMO_FRAMES
    cap.release()
    trace = Trace.load(out / "trace.json")
    assert trace.query == QUERY and trace.policy == str(tiny_policy_dir) and trace.tracker == "classical"
    assert [s.node for s in trace.steps] == [
        "sample_frames",
        "semantic_interpretation",
        "temporal_evidence_selection",
        "spatial_grounding",
        "track",
    ]
    assert trace.steps[1].fallback and trace.steps[1].completion_ids
    assert [(n, t) for desc, n, t in bars if desc == "tracking (classical)"] == [(DEMO_FRAMES, DEMO_FRAMES)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def test_chain_failure_writes_nothing(
    demo_clip: Path, tiny_policy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _segment(demo_clip, out, tiny_policy_dir, "--max-attempts", "2") == EXIT_CHAIN_FAILED
    err = capsys.readouterr().err
    assert "failed at semantic_interpretation" in err and "[semantic_interpretation#2]" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_video", "video not found"),
        ("empty_folder", "no image files"),
        ("empty_query", "query is empty"),
        ("missing_policy", "policy checkpoint folder does not exist"),
        ("missing_sam2", "SAM2 checkpoint not found"),
        ("nonempty_out", "exists and is not empty (it holds keep.txt)"),
        ("bad_frames", "--frames must be at least 1"),
        ("text_as_txt", "not a readable video"),
        ("text_as_mp4", "cannot read video"),
        ("sam2_not_torch", "is not a torch checkpoint"),
    ],
)
def test_bad_input(
    case: str,
    message: str,
    demo_clip: Path,
    tiny_policy_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    video, query, extra = str(demo_clip), QUERY, ["--tracker", "classical"]
    policy = str(tiny_policy_dir)
    if case == "missing_video":
        video = str(tmp_path / "nope.mp4")
    elif case == "empty_folder":
        (tmp_path / "frames").mkdir()
        video = str(tmp_path / "frames")
    elif case == "empty_query":
        query = "   "
    elif case == "missing_policy":
        policy = str(tmp_path / "no-such-policy")
    elif case == "missing_sam2":
        extra = ["--tracker", "sam2", "--sam2-checkpoint", str(tmp_path / "missing.pt")]
    elif case == "nonempty_out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "bad_frames":
        extra += ["--frames", "0"]
    elif case in {"text_as_txt", "text_as_mp4"}:
        video = str(tmp_path / ("notes.txt" if case == "text_as_txt" else "notes.mp4"))
        Path(video).write_text("not a video\n")
    elif case == "sam2_not_torch":
        (tmp_path / "sam2.pt").write_text("not a checkpoint")
        extra = ["--tracker", "sam2", "--sam2-checkpoint", str(tmp_path / "sam2.pt")]

        def no_policy(*args: object, **kwargs: object) -> None:
            raise AssertionError("the policy must not load before the cheap checks")

        monkeypatch.setattr("revseg_agent.app.cli.segment.load_policy", no_policy)
    code = main(["segment", video, query, "--out", str(out), "--policy", policy, "--device", "cpu", *extra])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    if case == "nonempty_out":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()


def test_step_mode_lets_a_person_edit_the_keyframe(
    demo_clip: Path,
    tiny_policy_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Pauses come after sample_frames, semantic_interpretation, temporal_evidence_selection
    # and spatial_grounding.
    answers = iter(["", "", "set keyframe_index=5", "", "set boxes=[[60, 100, 100, 140]]", ""])
    monkeypatch.setattr("builtins.input", lambda _prompt="": next(answers))
    out = tmp_path / "out"
    code = _segment(
        demo_clip, out, tiny_policy_dir, "--step", "--on-parse-failure", "fallback", "--max-attempts", "1"
    )
    assert code == 0
    shown = capsys.readouterr().out
    assert "── semantic_interpretation" in shown and "next: spatial_grounding" in shown
    trace = json.loads((out / "trace.json").read_text())
    assert trace["result"]["keyframe_index"] == 5
    grounding = next(s for s in trace["steps"] if s["node"] == "spatial_grounding")
    assert grounding["visuals"]["keyframe"]["frame_indices"] == [5]  # round 2 looked at the corrected frame
    assert trace["result"]["boxes"] == [[60, 100, 100, 140]]
    edits = [(e["key"], e["new"], e["before"]) for e in trace["human_edits"]]
    assert edits == [
        ("keyframe_index", 5, ["spatial_grounding"]),
        ("boxes", [[60.0, 100.0, 100.0, 140.0]], ["track"]),
    ]


def test_entry_point_runs_as_a_program(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "revseg_agent",
            "segment",
            str(tmp_path / "missing.mp4"),
            "q",
            "--out",
            str(tmp_path / "o"),
            "--tracker",
            "classical",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert "video not found" in proc.stderr


def test_demo_runs_offline_with_the_shipped_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "out"), "--seed", "0"]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "input",
        "masks",
        "masks.json",
        "overlay.mp4",
        "trace.json",
        "demo.html",
        OUTPUT_MARKER,  # the folder is revseg's: a later run may replace it
    }
    out = capsys.readouterr().out
    assert "J&F against the exact ground truth" in out and "demo.html" in out
    assert json.loads((tmp_path / "out" / "trace.json").read_text())["policy"].endswith("revseg-tiny")
