"""The Qwen2.5-VL policy on a tiny random-init checkpoint, loaded the way users load real ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

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
from revseg_agent.synth.square_clip import demo_frames

from .conftest import processor_reference_batch

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


@pytest.mark.parametrize(
    ("layout", "timing", "slots", "seconds_per_slot"),
    [
        # 16 frames taken every 10th frame of a 24 fps video: one every 10/24 s.
        ("frame-per-slot", "real", 16, 10 / 24),  # each frame repeated: one slot per frame id
        ("frame-per-slot", "floor", 16, 0.5),  # 10/24 s < 0.5 s: fed as if slower, 1 time per slot
        ("paired", "real", 8, 2 * 10 / 24),  # as sampled: two frames per temporal slot
        ("paired", "floor", 8, 2 * 10 / 24),  # slots 0.83 s apart: at the real rate
    ],
)
def test_video_metadata_sets_temporal_positions(
    tiny_policy_dir: Path, layout: str, timing: str, slots: int, seconds_per_slot: float
) -> None:
    policy = QwenVLPolicy.from_pretrained(
        tiny_policy_dir,
        device="cpu",
        frame_layout=layout,  # type: ignore[arg-type]
        frame_timing=timing,  # type: ignore[arg-type]
    )
    inputs = policy.prepare_inputs(VIDEO_CHAT, VISUALS)
    assert inputs["second_per_grid_ts"].tolist() == [pytest.approx(seconds_per_slot)]
    assert inputs["video_grid_thw"].tolist()[0][0] == slots


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


SHORT_CHAT = [
    ChatMessage(role="user", content=[VisualPart(type="image", ref="key"), TextPart(text="Detect a.")])
]


def test_batches_equal_the_processors_own_batching(tiny_policy_dir: Path) -> None:
    """The reference passes each clip's timing as sampled (`frame_timing="real"`); the floored
    timing is `frame_layout`'s, tested in test_frame_timing.py."""
    policy = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu", frame_timing="real")
    requests = [
        (TWO_ROUNDS, VISUALS),
        (SHORT_CHAT, {"key": ImageFrame(FRAMES[9][:200])}),
        (VIDEO_CHAT, VISUALS),
    ]
    ours = policy.prepare_batch(requests)
    theirs = processor_reference_batch(policy, requests)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, msg=key)


def test_assistant_token_ids_are_spliced_verbatim(policy: QwenVLPolicy) -> None:
    """Token-in/token-out: round 2 holds the ids round 1 sampled, even ids that are not how the
    tokenizer would spell the text (a random or early model samples such ids)."""
    tok = policy.processor.tokenizer
    answer = TWO_ROUNDS[1]
    text = answer.content[0].text  # type: ignore[union-attr]
    canonical = tok(text, add_special_tokens=False).input_ids
    by_character = [i for ch in text for i in tok(ch, add_special_tokens=False).input_ids]
    assert by_character != canonical and tok.decode(by_character) == text
    end = tok.convert_tokens_to_ids("<|im_end|>")
    round1 = policy.prepare_inputs(VIDEO_CHAT, VISUALS)["input_ids"][0].tolist()
    whole = policy.prepare_inputs(TWO_ROUNDS, VISUALS)["input_ids"][0].tolist()
    rest = whole[len(round1) + len(canonical) :]
    assert whole[: len(round1)] == round1 and rest[0] == end
    for sampled in (canonical, by_character, [*by_character, end]):
        chat = [TWO_ROUNDS[0], answer.model_copy(update={"token_ids": sampled}), TWO_ROUNDS[2]]
        inputs = policy.prepare_inputs(chat, VISUALS)
        ids = inputs["input_ids"][0].tolist()
        assert ids == round1 + sampled + (rest[1:] if sampled[-1] == end else rest)
        types = inputs["mm_token_type_ids"][0].tolist()
        assert types[len(round1) : len(round1) + len(sampled)] == [0] * len(sampled)
        assert int(inputs["image_grid_thw"].shape[0]) == int(inputs["video_grid_thw"].shape[0]) == 1
    chat = [TWO_ROUNDS[0], answer.model_copy(update={"token_ids": canonical}), TWO_ROUNDS[2]]
    assert policy.prepare_inputs(chat, VISUALS)["input_ids"][0].tolist() == whole


def _round2_chats(policy: QwenVLPolicy, answers: list[str]) -> list:  # type: ignore[type-arg]
    tok = policy.processor.tokenizer
    return [
        (
            [
                TWO_ROUNDS[0],
                ChatMessage(
                    role="assistant",
                    content=[TextPart(text=a)],
                    token_ids=tok(a, add_special_tokens=False).input_ids,
                ),
                TWO_ROUNDS[2],
            ],
            {**VISUALS, "key": ImageFrame(FRAMES[k])},
        )
        for k, a in enumerate(answers)
    ]


def test_a_shared_prefix_is_encoded_once_and_changes_nothing(policy: QwenVLPolicy) -> None:
    """n samples of one chat, and round-2 chats that share round 1 (video, query), encode the shared
    part once (KV cache) and give what each chat gives on its own."""
    patches: list[int] = []
    hook = policy.model.model.visual.register_forward_hook(
        lambda _m, args, _o: patches.append(args[0].shape[0])
    )
    greedy = SamplingParams(max_new_tokens=8)
    try:
        one = policy.generate(VIDEO_CHAT, VISUALS, sampling=greedy)[0]
        video_patches = patches.pop()
        many = policy.generate(VIDEO_CHAT, VISUALS, sampling=greedy, n=3)
        assert patches == [video_patches]  # the video was encoded once for the 3 samples
        for gen in many:
            assert gen.completion_ids == one.completion_ids and gen.prompt_ids == one.prompt_ids
            np.testing.assert_allclose(gen.logprobs, one.logprobs, atol=1e-4)
        requests = _round2_chats(policy, ["frame id: 3", "<answer>frame id: 12</answer>", "x"])
        alone = [policy.generate(m, v, sampling=greedy)[0] for m, v in requests]
        patches.clear()
        batch = policy.generate_batch(requests, sampling=greedy)
        image_patches = sum(
            policy.prepare_inputs(m, v)["image_grid_thw"].prod(-1).sum().item() for m, v in requests
        )
        assert sorted(patches) == sorted([video_patches, image_patches])
    finally:
        hook.remove()
    for a, b in zip(alone, batch, strict=True):
        assert a.prompt_ids == b.prompt_ids and a.completion_ids == b.completion_ids
        assert a.image_sizes == b.image_sizes and a.video_sizes == b.video_sizes
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def test_sampled_batches_with_a_shared_prefix_replay_exactly(policy: QwenVLPolicy) -> None:
    from revseg_agent.training.replay import append_completion

    requests = _round2_chats(policy, ["frame id: 3", "<answer>frame id: 12</answer>"])
    batch = policy.generate_batch(
        requests, sampling=SamplingParams(do_sample=True, max_new_tokens=10, seed=5)
    )
    for (messages, visuals), gen in zip(requests, batch, strict=True):
        inputs = append_completion(policy.prepare_inputs(messages, visuals), gen.completion_ids)
        with torch.no_grad():
            logits = policy.model(**inputs).logits[0].float()
        start, n = len(gen.prompt_ids) - 1, len(gen.completion_ids)
        targets = torch.tensor(gen.completion_ids)
        replay = torch.log_softmax(logits[start : start + n], -1).gather(-1, targets[:, None])[:, 0]
        np.testing.assert_allclose(replay.numpy(), gen.logprobs, atol=1e-4)


def test_concurrent_callers_get_what_they_would_alone(policy: QwenVLPolicy) -> None:
    """A served graph or `revseg eval --workers` shares one policy between threads."""
    from concurrent.futures import ThreadPoolExecutor

    answers = ["frame id: 1", "frame id: 5", "<answer>x</answer>"]
    requests = [*_round2_chats(policy, answers), (VIDEO_CHAT, VISUALS)]
    greedy = SamplingParams(max_new_tokens=24)
    alone = [policy.generate(m, v, sampling=greedy)[0] for m, v in requests]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda r: policy.generate(r[0], r[1], sampling=greedy)[0], requests))
    assert [g.completion_ids for g in together] == [g.completion_ids for g in alone]
    assert [g.prompt_ids for g in together] == [g.prompt_ids for g in alone]
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(b.logprobs, a.logprobs, atol=1e-5)
