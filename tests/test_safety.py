# ruff: noqa: E501  (the tables keep one case a line)
"""Safe on any machine: bad input is one clear line and exit 2, `--overwrite` replaces only
revseg's own outputs, and results that cross thread counts are compared within a stated tolerance.

Fast: no model is built (the commands stop at their checks, before any policy loads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from revseg_agent.app.cli import EXIT_BAD_INPUT, main
from revseg_agent.io import OUTPUT_MARKER, OutputFolderError, atomic_output_dir, claim_output_dir

from .benchmark_fixtures import write_textured_mevis
from .tolerance import FLOAT_TOLERANCE, differences

RECIPE = "policy: tiny-random\ndata: {kind: generated, num_samples: 2, num_frames: 6}\n"


def _one_clear_line(capfd: pytest.CaptureFixture[str], message: str) -> str:
    """What a person sees on the terminal (file descriptor 2, native writes included): one
    `error:` line holding `message`, no traceback, no C++ log line."""
    err = capfd.readouterr().err
    assert "Traceback" not in err and "video_reader.cc" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    return errors[0]


# -- every command's bad input -------------------------------------------------------------------


def _recipe(tmp_path: Path, text: str) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


CUDA = ["--device", "cuda"]
BAD_INPUT = [
    # (case, arguments (tmp_path -> argv), message)
    ("yaml_unclosed", lambda t: ["train", "grpo", "--config", _recipe(t, "max_steps: [1\n")], "not valid YAML"),
    ("yaml_tab", lambda t: ["train", "grpo", "--config", _recipe(t, "data:\n\tkind: generated\n")], "line 2"),
    ("yaml_empty", lambda t: ["train", "sft", "--config", _recipe(t, ""), "--output-dir", str(t / "o")], "is empty"),
    ("yaml_list", lambda t: ["train", "plan", "--config", _recipe(t, "- policy\n")], "must be a YAML mapping"),
    ("recipe_missing", lambda t: ["train", "grpo", "--config", str(t / "none.yaml")], "recipe not found"),
    ("recipe_cuda", lambda t: ["train", "grpo", "--config", _recipe(t, RECIPE + "device: cuda\n")], "no CUDA GPU"),
    ("segment_cuda", lambda t: ["segment", str(t / "clip.mp4"), "q", "--out", str(t / "o"), "--tracker", "classical", *CUDA], "no CUDA GPU"),
    ("eval_cuda", lambda t: ["eval", "--dataset", "mevis", "--root", str(t / "gt"), "--out", str(t / "o"), "--tracker", "classical", *CUDA], "no CUDA GPU"),
    ("eval_group_size", lambda t: ["eval", "--dataset", "mevis", "--root", str(t / "gt"), "--out", str(t / "o"), "--tracker", "classical", "--group-size", "0"], "--group-size must be at least 1"),
    ("ui_cuda", lambda t: ["ui", "--work", str(t / "w"), *CUDA], "no CUDA GPU"),
    ("ui_port", lambda t: ["ui", "--work", str(t / "w"), "--port", "99999"], "--port must be between 1 and 65535"),
    ("ui_open_host", lambda t: ["ui", "--work", str(t / "w"), "--host", "0.0.0.0"], "give a login with --auth"),
    ("ui_bad_auth", lambda t: ["ui", "--work", str(t / "w"), "--auth", "nopassword"], "USER:PASSWORD"),
    ("ui_allow_dir", lambda t: ["ui", "--work", str(t / "w"), "--allow-dir", str(t / "none")], "is not a folder"),
    ("text_as_mp4", lambda t: ["segment", str(t / "notes.mp4"), "q", "--out", str(t / "o"), "--tracker", "classical"], "cannot read video"),
    ("out_is_a_file", lambda t: ["synth", "--out", str(t / "notes.mp4"), "--train", "1", "--valid", "0", "--test", "0"], "is not a folder"),
    ("score_no_root", lambda t: ["score", "--dataset", "mevis", "--root", str(t / "none"), "--pred", str(t)], "dataset root not found"),
    ("inspect_missing", lambda t: ["inspect-policy", str(t / "none")], "does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "argv", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_clear_line_and_exit_2(
    case: str, argv: object, message: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from revseg_agent.synth.square_clip import make_demo_clip

    make_demo_clip(tmp_path / "clip.mp4")
    write_textured_mevis(tmp_path / "gt")
    (tmp_path / "notes.mp4").write_text("not a video\n")
    args = argv(tmp_path)  # type: ignore[operator]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(args) == EXIT_BAD_INPUT
    _one_clear_line(capfd, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


# -- --overwrite replaces only revseg's own outputs ----------------------------------------------


def _foreign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "important.txt").write_text("a person's work")
    return folder


def _survived(folder: Path) -> None:
    assert (folder / "important.txt").read_text() == "a person's work"


def test_an_output_folder_is_replaced_only_while_it_holds_revseg_s_own_entries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for content in ("first", "second"):
        with atomic_output_dir(out, overwrite=True, kind="segment") as tmp:
            (tmp / "masks.json").write_text(content)
    assert (out / "masks.json").read_text() == "second"
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker == {"written_by": "revseg-agent", "kind": "segment", "entries": ["masks.json"]}
    (out / "notes.txt").write_text("added by a person")  # into a revseg output folder
    refused = pytest.raises(OutputFolderError, match=r"holds notes\.txt \(revseg did not write them")
    with refused, atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "masks.json").write_text("third")
    assert (out / "notes.txt").exists() and (out / "masks.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left


def test_a_folder_that_gains_a_foreign_file_while_the_output_is_written_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    refused = pytest.raises(OutputFolderError, match=r"important\.txt")
    with refused, atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "masks.json").write_text("x")
        _foreign(out)  # another program writes there meanwhile
    _survived(out)


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("segment", lambda t, out: ["segment", str(t / "clip.mp4"), "q", "--out", str(out), "--overwrite", "--tracker", "classical"]),
        ("synth", lambda t, out: ["synth", "--out", str(out), "--overwrite", "--train", "1", "--valid", "0", "--test", "0"]),
        ("demo", lambda t, out: ["demo", "--out", str(out)]),
        ("eval", lambda t, out: ["eval", "--dataset", "mevis", "--root", str(t / "gt"), "--out", str(out), "--baseline", "oracle", "--tracker", "classical"]),
        ("train grpo", lambda t, out: ["train", "grpo", "--config", _recipe(t, RECIPE), "--output-dir", str(out)]),
        ("train sft", lambda t, out: ["train", "sft", "--config", _recipe(t, "trainer: sft\n" + RECIPE), "--output-dir", str(out)]),
    ],
)  # fmt: skip
def test_a_folder_with_a_foreign_file_survives_every_command(
    command: str, argv: object, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from revseg_agent.synth.square_clip import make_demo_clip

    make_demo_clip(tmp_path / "clip.mp4")
    write_textured_mevis(tmp_path / "gt")
    out = _foreign(tmp_path / "mine")
    assert main(argv(tmp_path, out)) == EXIT_BAD_INPUT  # type: ignore[operator]
    _one_clear_line(capfd, "important.txt")
    _survived(out)
    assert sorted(p.name for p in out.iterdir()) == ["important.txt"]


def test_folders_filled_over_time_are_claimed_once_and_reused(tmp_path: Path) -> None:
    runs = claim_output_dir(tmp_path / "run", "eval")
    (runs / "records.jsonl").write_text("")
    assert claim_output_dir(runs, "eval") == runs  # a resumed run
    with pytest.raises(OutputFolderError, match=r"important\.txt"):
        claim_output_dir(_foreign(tmp_path / "home"), "eval")
    with pytest.raises(OutputFolderError, match="not a folder"):
        claim_output_dir(runs / "records.jsonl", "eval")
    # a folder holding only folders revseg marked (a run's generated data/) is revseg's too
    parent = tmp_path / "train"
    claim_output_dir(parent / "data", "train-data")
    assert claim_output_dir(parent, "train-grpo") == parent
    mixed = tmp_path / "mixed"
    claim_output_dir(mixed / "data", "train-data")
    with pytest.raises(OutputFolderError, match=r"important\.txt"):
        claim_output_dir(_foreign(mixed), "train-grpo")


# -- the tolerance used for results that cross processes ------------------------------------------


def test_the_cross_process_tolerance_passes_reduction_noise_and_nothing_else() -> None:
    trace = {"completion_ids": [5, 7], "logprobs": [-5.638609409, -0.25], "box": [1.0, 2.0]}
    noise = {"completion_ids": [5, 7], "logprobs": [-5.638608932, -0.25], "box": [1.0, 2.0]}
    assert differences(trace, noise) == []
    assert differences(trace, {**noise, "completion_ids": [5, 8]}) == ["/completion_ids[1]: 7 != 8"]
    moved = {**noise, "logprobs": [-5.638609409 + 10 * FLOAT_TOLERANCE, -0.25]}
    assert len(differences(trace, moved)) == 1
    assert differences({"a": 1.0}, {"a": True}) and differences({"a": [1.0]}, {"a": [1.0, 2.0]})
