"""The Qwen2.5-VL policy on a tiny random-init checkpoint, loaded the way users load real ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from revseg_agent.demo import demo_frames
from revseg_agent.errors import CheckpointError
from revseg_agent.policies.base import (
    ChatMessage,
    ImageFrame,
    SamplingParams,
    TextPart,
    VideoFrames,
    VisualPart,
)
from revseg_agent.policies.qwen import QwenVLPolicy

pytestmark = pytest.mark.slow

FRAMES = demo_frames(16)
VISUALS = {
    "clip": VideoFrames(frames=FRAMES, frame_indices=list(range(0, 160, 10)), fps=24.0, total_num_frames=160),
    "key": ImageFrame(FRAMES[5]),
}
VIDEO_CHAT = [
    ChatMessage(role="user", content=[VisualPart(type="video", ref="clip"), TextPart(text="Which frame?")])
]
TWO_ROUNDS = [
    *VIDEO_CHAT,
    ChatMessage(
        role="assistant",
        content=[TextPart(text="<answer>frame id: 6\nobject description: a red square</answer>")],
    ),
    ChatMessage(
        role="user",
        content=[
            VisualPart(type="image", ref="key"),
            TextPart(text="Detect a red square with bbox coordinates."),
        ],
    ),
]


@pytest.fixture(scope="module")
def policy(tiny_policy_dir: Path) -> QwenVLPolicy:
    return QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")


def test_checkpoint_is_in_the_real_formats(tiny_policy_dir: Path) -> None:
    names = {p.name for p in tiny_policy_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    assert json.loads((tiny_policy_dir / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_loads_fp32_on_cpu(policy: QwenVLPolicy) -> None:
    assert policy.model.dtype == torch.float32
    assert policy.device.type == "cpu"


def test_save_and_reload_gives_identical_greedy_output(policy: QwenVLPolicy, tmp_path: Path) -> None:
    policy.model.save_pretrained(tmp_path)
    policy.processor.save_pretrained(tmp_path)
    reloaded = QwenVLPolicy.from_pretrained(tmp_path, device="cpu")
    a = policy.generate(TWO_ROUNDS, VISUALS, sampling=SamplingParams(max_new_tokens=12))[0]
    b = reloaded.generate(TWO_ROUNDS, VISUALS, sampling=SamplingParams(max_new_tokens=12))[0]
    assert a.completion_ids == b.completion_ids and a.text == b.text
    assert a.prompt_ids == b.prompt_ids
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)


def test_video_metadata_sets_temporal_positions(policy: QwenVLPolicy) -> None:
    inputs = policy.prepare_inputs(VIDEO_CHAT, VISUALS)
    # 16 frames taken every 10th frame of a 24 fps video: 2.4 sampled fps; a grid step spans 2 frames.
    assert inputs["second_per_grid_ts"].tolist() == [pytest.approx(2 / 2.4)]
    assert inputs["video_grid_thw"].tolist()[0][0] == 8


def test_image_sizes_are_the_models_resized_input(policy: QwenVLPolicy) -> None:
    gen = policy.generate(TWO_ROUNDS, VISUALS, sampling=SamplingParams(max_new_tokens=4))[0]
    ((h, w),) = gen.image_sizes
    assert h % 28 == 0 and w % 28 == 0
    assert abs(w / h - 320 / 240) < 0.35  # aspect ratio kept within one patch
    assert len(gen.video_sizes) == 1


def test_n_samples_in_one_call(policy: QwenVLPolicy) -> None:
    gens = policy.generate(
        VIDEO_CHAT,
        VISUALS,
        sampling=SamplingParams(do_sample=True, temperature=1.0, max_new_tokens=10, seed=3),
        n=4,
    )
    assert len(gens) == 4
    assert len({tuple(g.completion_ids) for g in gens}) > 1
    for g in gens:
        assert len(g.logprobs) == len(g.completion_ids) > 0
        assert all(lp <= 0 for lp in g.logprobs)


def test_logprobs_match_a_forward_pass(policy: QwenVLPolicy) -> None:
    """Sampling-time log-probs equal a teacher-forced forward pass (what training replays)."""
    gen = policy.generate(TWO_ROUNDS, VISUALS, sampling=SamplingParams(max_new_tokens=10))[0]
    inputs = policy.prepare_inputs(TWO_ROUNDS, VISUALS)
    completion = torch.tensor([gen.completion_ids])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:  # marks image/video tokens for M-RoPE; completion tokens are text
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
        )
    with torch.no_grad():
        logits = policy.model(**inputs).logits[0].float()
    prompt_len = len(gen.prompt_ids)
    positions = torch.arange(prompt_len - 1, prompt_len - 1 + len(gen.completion_ids))
    replay = torch.log_softmax(logits[positions], -1).gather(-1, completion[0].unsqueeze(-1)).squeeze(-1)
    np.testing.assert_allclose(replay.numpy(), gen.logprobs, atol=1e-4)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        QwenVLPolicy.from_pretrained(tmp_path / "nope")


def test_checkpoint_that_does_not_match_its_config(tiny_policy_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_policy_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["text_config"]["intermediate_size"] += 8
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cannot load policy"):
        QwenVLPolicy.from_pretrained(broken)


def test_batch_of_different_chats_left_padded(policy: QwenVLPolicy) -> None:
    """Several chats in one call (as a group's round-2 calls are batched): each row's prompt is
    its own (padding removed), and its log-probs replay exactly, whatever the batch did."""
    short = [
        ChatMessage(role="user", content=[VisualPart(type="image", ref="key"), TextPart(text="Detect a.")])
    ]
    visuals_b = {**VISUALS, "key": ImageFrame(FRAMES[9][:200])}  # another size, another length
    requests = [(TWO_ROUNDS, VISUALS), (short, visuals_b)]
    batch = policy.generate_batch(requests, sampling=SamplingParams(do_sample=True, max_new_tokens=8, seed=1))
    assert len(batch) == 2
    for (messages, visuals), gen in zip(requests, batch, strict=True):
        alone = policy.prepare_inputs(messages, visuals)
        assert gen.prompt_ids == alone["input_ids"][0].tolist()
        inputs = dict(alone)
        completion = torch.tensor([gen.completion_ids])
        inputs["input_ids"] = torch.cat([inputs["input_ids"], completion], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
        )
        with torch.no_grad():
            logits = policy.model(**inputs).logits[0].float()
        n = len(gen.completion_ids)
        start = len(gen.prompt_ids) - 1
        replay = (
            torch.log_softmax(logits[start : start + n], -1)
            .gather(-1, completion[0].unsqueeze(-1))
            .squeeze(-1)
        )
        np.testing.assert_allclose(replay.numpy(), gen.logprobs, atol=1e-4)
    assert batch[1].image_sizes == [
        policy.generate(short, visuals_b, sampling=SamplingParams(max_new_tokens=1))[0].image_sizes[0]
    ]
