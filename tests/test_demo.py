"""`revseg demo`: a generated clip through the chain, written like `revseg segment`, with a page."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from revseg_agent.app.cli import main
from revseg_agent.app.demo import demo_scene, run_demo
from revseg_agent.io import OUTPUT_MARKER
from revseg_agent.parsing import format_box_answer, format_keyframe_answer
from revseg_agent.policies.base import ChatMessage
from revseg_agent.testing import ScriptedPolicy
from revseg_agent.types import Box

from .conftest import render_in_chromium


def _oracle_seed() -> tuple[int, np.ndarray, str]:
    """A demo seed whose target is on the first sampled frame (frame 0), its masks and answer."""
    for seed in range(20):
        scene, query = demo_scene(seed)
        truth = np.zeros(scene.frames.shape[:3], bool)
        for obj in query.targets:
            truth |= scene.masks[obj]
        if len(query.targets) == 1 and truth[0].sum() > 30:
            return seed, truth, query.description
    raise AssertionError("no demo seed with its target on frame 0")


def test_demo_writes_outputs_and_a_page_that_renders(tmp_path: Path) -> None:
    seed, truth, description = _oracle_seed()
    box = Box.from_mask(truth[0])
    assert box is not None

    def reply(messages: Sequence[ChatMessage]) -> str:
        asked_for_box = "bbox" in messages[-1].content[-1].text  # type: ignore[union-attr]
        if asked_for_box:
            return format_box_answer([box], description)
        return format_keyframe_answer("It is in frame 1.", 0, description)

    out = tmp_path / "demo"
    run = run_demo(out, seed=seed, policy=ScriptedPolicy(reply=reply), tracker="classical")
    assert run.jf > 0.7  # the true keyframe and box through the weight-free tracker
    assert {p.name for p in out.iterdir()} == {
        "input",
        "masks",
        "masks.json",
        "overlay.mp4",
        "trace.json",
        "demo.html",
        OUTPUT_MARKER,  # the folder is revseg's: a later run may replace it
    }
    assert len(list((out / "masks").glob("*.png"))) == len(truth)
    trace = json.loads((out / "trace.json").read_text())
    assert trace["result"]["keyframe_index"] == 0 and trace["query"] == run.query.text
    page = (out / "demo.html").read_text()
    assert run.query.text in page and "(keyframe)" in page and f"{100 * run.jf:.1f}" in page
    assert page.count("data:image/png;base64,") >= 8 + 1 + 6  # sampled frames, keyframe, overlays
    shot = render_in_chromium(out / "demo.html", tmp_path / "demo.png", size="1100,1600")
    assert shot.stat().st_size > 20_000


def test_demo_cli_refuses_an_unknown_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--policy", str(tmp_path / "nope")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
