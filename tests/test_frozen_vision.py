"""A frozen vision tower: cached visual tokens give the losses the patches give, and stay frozen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from revseg_agent.graphs.chats import FRAMES_REF, KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.policies.base import ImageFrame, VideoFrames
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.training.frozen_vision import FrozenVision
from revseg_agent.training.sft import answer_losses

# Same weights, same inputs, one process: only summation order may differ.
TOLERANCE = 1e-5


#: Each test loads a tiny real model.
pytestmark = pytest.mark.slow


def requests(seed: int) -> list:  # type: ignore[type-arg]
    """Round 1 on a 4-frame video, and round 2 continuing it on a keyframe: one row holds a video
    only, the other a video and an image, so visuals of both kinds come from several rows."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for _ in range(4)]
    video = VideoFrames(frames, [0, 1, 2, 3], 2.0, 4)
    round1 = round1_messages(f"the shape number {seed}", [0.0, 0.5, 1.0, 1.5])
    keyframe = ImageFrame(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
    round2 = round2_messages("the red circle", round1=round1, round1_answer="<answer>1</answer>")
    return [
        (round1, {FRAMES_REF: video}),
        (round2, {FRAMES_REF: video, KEYFRAME_REF: keyframe}),
    ]


@pytest.fixture
def policy(tiny_policy_dir: Path) -> QwenVLPolicy:
    return QwenVLPolicy.from_pretrained(str(tiny_policy_dir), device="cpu", dtype="float32")


def test_cached_tokens_give_the_losses_of_the_patches(policy: QwenVLPolicy) -> None:
    rows = policy.inputs.rows(requests(0) + requests(1))
    answers = ["<answer>one</answer>", "[1, 2, 3, 4]", "<answer>two</answer>", "[5, 6, 7, 8]"]
    policy.model.eval()
    with torch.no_grad():
        from_pixels = answer_losses(policy, rows, answers)
        vision = FrozenVision(policy.model)
        cached = answer_losses(policy, rows, answers, vision=vision)
        again = answer_losses(policy, policy.inputs.rows(requests(0) + requests(1)), answers, vision=vision)
    assert torch.allclose(from_pixels, cached, atol=TOLERANCE)
    assert torch.allclose(from_pixels, again, atol=TOLERANCE)
    # 2 distinct videos and 2 keyframes: computed once, then read back (rows rebuilt from scratch)
    assert vision.misses == 4 and vision.hits == 2 + 6


def test_a_training_step_leaves_the_tower_as_it_was(policy: QwenVLPolicy) -> None:
    vision = FrozenVision(policy.model)
    tower = {k: v.clone() for k, v in policy.model.model.visual.state_dict().items()}
    language = policy.model.lm_head.weight.clone()
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=1e-2)  # all, as a user might
    rows = policy.inputs.rows(requests(2))
    answer_losses(policy, rows, ["<answer>x</answer>", "[1, 1, 2, 2]"], vision=vision).mean().backward()
    optimizer.step()
    assert all(torch.equal(v, policy.model.model.visual.state_dict()[k]) for k, v in tower.items())
    assert not torch.equal(language, policy.model.lm_head.weight)
    assert not any(p.requires_grad for p in policy.model.model.visual.parameters())


def test_a_capacity_bounds_the_cache(policy: QwenVLPolicy) -> None:
    vision = FrozenVision(policy.model, capacity=2)
    with torch.no_grad():
        for seed in range(3):
            vision.encoder_outputs(policy.inputs.rows(requests(seed)[:1]))
    assert len(vision.cache) == 2 and vision.misses == 3


def test_qwen3_vl_is_refused_by_name(tiny_qwen3_policy_dir: Path) -> None:
    """Qwen3-VL feeds deepstack features from inside the tower to the language model too."""
    policy = QwenVLPolicy.from_pretrained(str(tiny_qwen3_policy_dir), device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="qwen3_vl"):
        FrozenVision(policy.model)
