"""The whole chain with real (tiny, random-init) models loaded from disk the way users load them:
Qwen2.5-VL through `from_pretrained`, SAM2.1 through a strict checkpoint load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revseg_agent.app.cli import main
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.pipeline import segment
from revseg_agent.graphs.traces import Trace
from revseg_agent.policies.base import SamplingParams
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.tools.sam2_tracker import SAM2Tracker

from .conftest import SAM2_TEST_CONFIG, SAM2_TEST_IMAGE_SIZE

pytestmark = pytest.mark.slow
pytest.importorskip("sam2")


def _sam2_args(checkpoint: Path) -> list[str]:
    return [
        "--tracker",
        "sam2",
        "--sam2-checkpoint",
        str(checkpoint),
        "--sam2-config",
        SAM2_TEST_CONFIG,
        "--sam2-image-size",
        str(SAM2_TEST_IMAGE_SIZE),
    ]


def test_cli_with_tiny_qwen_and_tiny_sam2_on_a_generated_clip(
    demo_clip: Path, tiny_policy_dir: Path, tiny_sam2_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(demo_clip),
            "the red square",
            "--out",
            str(out),
            "--policy",
            str(tiny_policy_dir),
            "--device",
            "cpu",
            "--frames",
            "8",
            "--max-new-tokens",
            "16",
            "--max-attempts",
            "1",
            "--on-parse-failure",
            "fallback",
            *_sam2_args(tiny_sam2_checkpoint),
        ]
    )
    assert code == 0
    trace = Trace.load(out / "trace.json")
    assert trace.tracker == "sam2" and trace.ok
    assert len(trace.sampled_indices) == 8
    assert len(list((out / "masks").glob("*.png"))) == 24


@pytest.mark.davis
def test_python_api_on_a_real_davis_sequence(
    davis: Path, tiny_policy_dir: Path, tiny_sam2_checkpoint: Path, tmp_path: Path
) -> None:
    policy = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    tracker = SAM2Tracker.from_checkpoint(
        tiny_sam2_checkpoint, SAM2_TEST_CONFIG, device="cpu", image_size=SAM2_TEST_IMAGE_SIZE
    )
    context = Context(
        policy=policy,
        tracker=tracker,
        artifacts_dir=tmp_path,
        max_attempts=1,
        on_parse_failure="fallback",
        sampling=SamplingParams(max_new_tokens=16),
    )
    result = segment(davis / "JPEGImages" / "blackswan", "the bird swimming in the pond", context)
    assert result.masks.masks.shape == (50, 480, 854)
    assert result.trace.num_video_frames == 50
    assert result.trace.sampled_indices == [int(i) for i in np.linspace(0, 49, 16).round()]
    round1 = result.trace.steps[1]
    assert round1.visuals["frames"].fps == 24.0 and len(round1.logprobs) == len(round1.completion_ids)
