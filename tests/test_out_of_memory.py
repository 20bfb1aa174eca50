"""Out of GPU memory anywhere is exit 4 with the knob to turn: `torch.cuda.OutOfMemoryError`
injected in round 1, round 2 and tracking of `revseg segment`, in `revseg eval`, in the served
graph (the client reads it) and in training rollouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from revseg_agent.app.cli import EXIT_RESOURCES, main
from revseg_agent.errors import OUT_OF_MEMORY, ResourceError
from revseg_agent.graphs.app import graph
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.policies.base import ChatMessage, TextPart
from revseg_agent.testing import BoxTracker, ScriptedPolicy

from .benchmark_fixtures import write_textured_mevis

ROUND1 = "<think>t</think><answer>frame id: 2\nobject description: the red square</answer>"
ROUND2 = '```json\n[{"bbox_2d": [60, 100, 100, 140], "label": "the red square"}]\n```'
KNOBS = {
    "semantic_interpretation": "--frames",
    "spatial_grounding": "keyframe pixel budget",
    "track": "--sam2-image-size",
}


def _asks_for_box(messages: Sequence[ChatMessage]) -> bool:
    return "bbox" in " ".join(p.text for p in messages[-1].content if isinstance(p, TextPart))


def oom_policy(where: str) -> ScriptedPolicy:
    """Answers both rounds, except that the round named `where` runs out of GPU memory."""

    def reply(messages: Sequence[ChatMessage]) -> str:
        box = _asks_for_box(messages)
        if where == ("spatial_grounding" if box else "semantic_interpretation"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return ROUND2 if box else ROUND1

    return ScriptedPolicy(reply=reply)


def _no_memory_to_track(*args: Any, **kwargs: Any) -> Any:
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")


def _one_error_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = capfd.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize("where", list(KNOBS))
def test_segment_exits_4_naming_the_knob_of_the_place_that_ran_out(
    where: str,
    demo_clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(
        "revseg_agent.app.cli.segment.load_policy", lambda spec, device=None: oom_policy(where)
    )
    if where == "track":
        monkeypatch.setattr("revseg_agent.graphs.nodes.stream_masks", _no_memory_to_track)
    out = tmp_path / "out"
    args = ["segment", str(demo_clip), "the red square", "--out", str(out), "--tracker", "classical"]
    assert main(args) == EXIT_RESOURCES
    line = _one_error_line(capfd)
    assert f"out of GPU memory in {where}" in line and KNOBS[where] in line, line
    assert not out.exists()


def test_eval_exits_4_and_keeps_no_record_of_the_expression_that_ran_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    root = write_textured_mevis(tmp_path / "gt")
    monkeypatch.setattr(
        "revseg_agent.graphs.registry.load_policy", lambda spec, device=None: oom_policy("spatial_grounding")
    )
    out = tmp_path / "out"
    args = ["eval", "--dataset", "mevis", "--root", str(root), "--out", str(out), "--tracker", "classical"]
    assert main([*args, "--policy", "revseg-tiny"]) == EXIT_RESOURCES
    assert "out of GPU memory in spatial_grounding" in _one_error_line(capfd)
    assert not (out / "records.jsonl").exists() or (out / "records.jsonl").read_text() == ""
    assert not (out / "results.json").exists()


def test_a_served_client_reads_out_of_memory_as_the_run_s_error(demo_clip: Path) -> None:
    out = graph.invoke(
        {"video_path": str(demo_clip), "query": "the red square"},
        context=Context(policy=oom_policy("semantic_interpretation"), tracker=BoxTracker(), num_frames=4),
    )
    assert out["error"]["node"] == "semantic_interpretation" and out["error"]["code"] == OUT_OF_MEMORY
    assert "--frames" in out["error"]["message"] and "masks" not in out


def test_training_rollouts_stop_with_the_recipe_s_knobs(demo_clip: Path, tmp_path: Path) -> None:
    from revseg_agent.training.rollouts import run_group

    policy = oom_policy("spatial_grounding")  # a group's runs share one policy
    contexts = [
        Context(policy=policy, tracker=BoxTracker(), run_tracker=False, num_frames=4) for _ in range(3)
    ]
    with pytest.raises(ResourceError, match="group_size, prompts_per_step, max_new_tokens"):
        run_group(build_graph(), {"video_path": str(demo_clip), "query": "q"}, contexts)


def test_train_exits_4_when_rollouts_run_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from revseg_agent.training import trainer

    def no_memory(*args: Any, **kwargs: Any) -> Any:  # where no node catches it
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(trainer, "run_group", no_memory)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "policy: tiny-random\ndata: {kind: generated, num_samples: 2, num_frames: 6}\n"
        "group_size: 2\nmax_new_tokens: 4\nnum_frames: 2\ndevice: cpu\nreport_to: []\n"
    )
    args = ["train", "grpo", "--config", str(recipe), "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--max-steps", "1"]) == EXIT_RESOURCES
    line = _one_error_line(capfd)
    assert "out of GPU memory in rollouts (CUDA out of memory" in line and "group_size" in line
