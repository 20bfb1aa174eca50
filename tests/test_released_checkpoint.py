"""The inference path as the released Qwen2.5-VL-7B-Instruct and SAM2.1 checkpoints need it.

The tiny checkpoints here carry what of the release changes behaviour: the tokenizer's added
tokens at their released ids, the vocabulary size, `generation_config.json` (repetition penalty
1.05, top-k 1, top-p 0.001, temperature 0.1) and, for `released_dir`, the processor's released
pixel budgets in the release's file layout (one `preprocessor_config.json`, no video config).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from revseg_agent.parsing import BoxAnswer, parse_box_answer, to_frame_space
from revseg_agent.policies.base import (
    ChatMessage,
    ImageFrame,
    SamplingParams,
    TextPart,
    VideoFrames,
    VisualPart,
    box_units,
)
from revseg_agent.policies.mrope import reference_rope_index
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.released import QWEN_ADDED_TOKENS, RELEASED_GENERATION_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def released_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(
        tmp_path_factory.mktemp("released"), released_budgets=True, released_vocab=True
    )


@pytest.fixture(scope="module")
def policy(tiny_policy_dir: Path) -> QwenVLPolicy:
    return QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")


@pytest.fixture(scope="module")
def released_policy(released_dir: Path) -> QwenVLPolicy:
    return QwenVLPolicy.from_pretrained(released_dir, device="cpu")


def _video_chat() -> list[ChatMessage]:
    return [ChatMessage(role="user", content=[VisualPart(type="video", ref="clip"), TextPart(text="Which?")])]


# -- 6. the released tokenizer vocabulary -------------------------------------------------------


def test_tokenizer_has_the_released_added_tokens(released_policy: QwenVLPolicy) -> None:
    policy = released_policy
    tokenizer = policy.processor.tokenizer
    for token, token_id, special in QWEN_ADDED_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) == token_id
        assert (token in tokenizer.all_special_tokens) is special, token
    assert len(tokenizer) == 151665
    assert policy.model.config.text_config.vocab_size == 152064
    row = policy.prepare_inputs(_video_chat(), {"clip": _clip(4)})["input_ids"][0].tolist()
    assert row[:1] == [151644] and 151652 in row and 151656 in row  # <|im_start|>, vision, video pad


@pytest.mark.parametrize("which", ["released", "small"])
def test_box_tokens_reach_the_parser(released_policy: QwenVLPolicy, policy: QwenVLPolicy, which: str) -> None:
    """Box-token grounding answers are special tokens; decoding must keep them. Qwen2.5-VL writes
    them in pixels of its resized input (here 1008x1344 for a 480x640 frame), as every form."""
    policy = released_policy if which == "released" else policy
    tokenizer = policy.processor.tokenizer
    ids = tokenizer("<|box_start|>(252,504),(756,1008)<|box_end|>")["input_ids"] + [tokenizer.eos_token_id]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|box_start|>")
    answer = parse_box_answer(policy.decode(ids), units=box_units(policy))
    assert isinstance(answer, BoxAnswer) and answer.space == "pixels"
    boxes = to_frame_space(answer, model_size=(1008, 1344), frame_size=(480, 640))
    assert isinstance(boxes, tuple) and boxes[0].to_list() == pytest.approx([120, 240, 360, 480])


# -- 3. the checkpoint's generation config ---------------------------------------------------------


def _processors_used(
    policy: QwenVLPolicy, monkeypatch: pytest.MonkeyPatch, sampling: SamplingParams
) -> set[str]:
    seen: list[str] = []
    cls = type(policy.model)
    original = cls._get_logits_processor

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        processors = original(self, *args, **kwargs)
        seen.extend(type(p).__name__ for p in processors)
        return processors

    monkeypatch.setattr(cls, "_get_logits_processor", spy)
    policy.generate(_video_chat(), {"clip": _clip(4)}, sampling=sampling, n=2)
    monkeypatch.undo()
    return set(seen)


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        (SamplingParams(max_new_tokens=3), set()),  # greedy
        (SamplingParams(do_sample=True, temperature=1.0, max_new_tokens=3, seed=0), set()),
        (
            SamplingParams(do_sample=True, temperature=0.7, top_p=0.9, top_k=5, max_new_tokens=3, seed=0),
            {"TemperatureLogitsWarper", "TopPLogitsWarper", "TopKLogitsWarper"},
        ),
    ],
)
def test_sampling_is_exactly_what_sampling_params_say(
    policy: QwenVLPolicy, monkeypatch: pytest.MonkeyPatch, sampling: SamplingParams, expected: set[str]
) -> None:
    # the checkpoint asks for a repetition penalty and top-k 1 (as Qwen's instruct releases do)
    assert (
        policy.model.generation_config.repetition_penalty == RELEASED_GENERATION_CONFIG["repetition_penalty"]
    )
    assert policy.model.generation_config.top_k == 1
    used = _processors_used(policy, monkeypatch, sampling) - {
        "SuppressTokensLogitsProcessor",
        "SampledTokenLogprobs",
    }
    assert used == expected


def test_temperature_one_samples_differ(policy: QwenVLPolicy) -> None:
    """With the checkpoint's top-k 1 left in place every sample would be the greedy one."""
    gens = policy.generate(
        _video_chat(),
        {"clip": _clip(4)},
        sampling=SamplingParams(do_sample=True, max_new_tokens=6, seed=1),
        n=6,
    )
    assert len({tuple(g.completion_ids) for g in gens}) > 1


# -- 2. M-RoPE positions after a video ------------------------------------------------------------


def _released_rule(types: list[int], images: list[list[int]], videos: list[list[int]], seconds: list[float],
                   tokens_per_second: float = 2.0, merge: int = 2) -> list[tuple[int, int, int]]:  # fmt: skip
    """The rule written out token by token (vLLM's get_mrope_input_positions): a visual block at
    `start` gets `start + (t * tokens_per_second * second_per_grid, h, w)`; the text after it
    continues at the block's largest position + 1."""
    images_left, videos_left, seconds_left = list(images), list(videos), list(seconds)
    out: list[tuple[int, int, int]] = []
    start = i = 0
    while i < len(types):
        if types[i] == 0:
            out.append((start, start, start))
            start, i = start + 1, i + 1
            continue
        video = types[i] == 2
        t, h, w = (videos_left if video else images_left).pop(0)
        scale = tokens_per_second * seconds_left.pop(0) if video else 0.0
        block = [
            (start + int(tt * scale), start + hh, start + ww)
            for tt in range(t)
            for hh in range(h // merge)
            for ww in range(w // merge)
        ]
        out += block
        start = max(max(p) for p in block) + 1
        i += len(block)
    return out


def test_positions_follow_the_released_rule(policy: QwenVLPolicy) -> None:
    """Images and videos mixed, 5 and 7.5 s per temporal patch, a left-padded row."""
    image, video_a, video_b = [1, 4, 4], [6, 4, 4], [4, 2, 4]
    row_a = [0] * 3 + [1] * 4 + [0] * 2 + [2] * 24 + [0] * 4  # text, image, text, video, text
    row_b = [0] * 2 + [2] * 8 + [0] * 3
    pad = len(row_a) - len(row_b)
    types = torch.tensor([row_a, [0] * pad + row_b])
    mask = torch.tensor([[1] * len(row_a), [0] * pad + [1] * len(row_b)])
    module = policy.model.model
    positions, deltas = module.get_rope_index(
        torch.zeros_like(types),
        types,
        image_grid_thw=torch.tensor([image]),
        video_grid_thw=torch.tensor([video_a, video_b]),
        second_per_grid_ts=torch.tensor([5.0, 7.5]),
        attention_mask=mask,
    )
    expected_a = _released_rule(row_a, [image], [video_a], [5.0])
    expected_b = _released_rule(row_b, [], [video_b], [7.5])
    assert positions[:, 0].T.tolist() == [list(p) for p in expected_a]
    assert positions[:, 1, pad:].T.tolist() == [list(p) for p in expected_b]
    # the text after video a starts after its last temporal position (5 patches x 10 = 50)
    assert expected_a[3 + 4 + 2 + 24][0] > 50
    assert deltas[:, 0].tolist() == [
        max(map(max, expected_a)) + 1 - len(row_a),
        max(map(max, expected_b)) + 1 - len(row_b),
    ]


def test_generate_and_replay_use_the_released_rule(policy: QwenVLPolicy) -> None:
    """Every forward goes through the model's get_rope_index, which is the released rule."""
    module = policy.model.model
    assert module.get_rope_index.__func__ is reference_rope_index
    calls = []
    original = module.get_rope_index
    module.get_rope_index = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        policy.generate(_video_chat(), {"clip": _clip(4)}, sampling=SamplingParams(max_new_tokens=2))
        policy.model(**policy.prepare_inputs(_video_chat(), {"clip": _clip(4)}))
    finally:
        module.get_rope_index = original
    assert len(calls) >= 2


# -- 4. one temporal slot per frame id -------------------------------------------------------------


def _clip(n: int, size: tuple[int, int] = (56, 56), interval: int = 10, fps: float = 24.0) -> VideoFrames:
    """`n` solid frames, frame k of value 10 k (so each frame's pixels are recognisable)."""
    frames = [np.full((*size, 3), 10 * k, np.uint8) for k in range(n)]
    return VideoFrames(frames, list(range(0, n * interval, interval)), fps, n * interval)


def test_each_frame_id_has_its_own_slot(policy: QwenVLPolicy) -> None:
    n = 6  # one frame a second: M-RoPE time (2 steps a second) tells every slot apart
    inputs = policy.prepare_inputs(_video_chat(), {"clip": _clip(n, interval=24)})
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert t == n
    # pixel_values_videos rows: slot-major patches of (channels, temporal 2, 14, 14) values
    patches = inputs["pixel_values_videos"].reshape(t, h * w, 3, 2, 14 * 14)
    for k in range(n):
        assert torch.equal(patches[k, :, :, 0], patches[k, :, :, 1])  # both halves are frame k
    means = patches.mean(dim=(1, 2, 3, 4))
    assert len(set(means.tolist())) == n  # and the slots differ
    positions, _ = policy.model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    )  # fmt: skip
    video = inputs["mm_token_type_ids"][0] == 2
    assert len(set(positions[0, 0, video].tolist())) == n  # n distinct temporal positions


# -- 5. the released processor budgets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "frame_size", "interval", "fps", "grid_hw", "seconds_per_slot"),
    [
        # 1080p: each frame within qwen-vl-utils' 768 tokens (602,112 px): 560 x 1008; frames
        # 10/30 s apart are fed one slot per 0.5 s (`frame_layout.MAX_FED_FPS`)
        ("1080p", (1080, 1920), 10, 30.0, (40, 72), 0.5),
        # 60 s clip, 16 frames: one every 4 s, so 8 M-RoPE steps per slot. qwen-vl-utils 0.0.14
        # resizes the frames of a frame-list video on a 56-px grid first (504, not 476, rows)
        ("60s", (480, 854), 120, 30.0, (36, 60), 4.0),
    ],
)
def test_released_budgets(
    released_dir: Path,
    caplog: pytest.LogCaptureFixture,
    name: str,
    frame_size: tuple[int, int],
    interval: int,
    fps: float,
    grid_hw: tuple[int, int],
    seconds_per_slot: float,
) -> None:
    policy = QwenVLPolicy.from_pretrained(released_dir, device="cpu")
    assert not (released_dir / "video_preprocessor_config.json").exists()
    assert json.loads((released_dir / "preprocessor_config.json").read_text())["max_pixels"] == 12845056
    clip = _clip(16, frame_size, interval, fps)
    keyframe = ImageFrame(np.zeros((*frame_size, 3), np.uint8))
    chat = [
        *_video_chat(),
        ChatMessage(role="assistant", content=[TextPart(text="frame id: 3")]),
        ChatMessage(role="user", content=[VisualPart(type="image", ref="key"), TextPart(text="Detect it.")]),
    ]
    with caplog.at_level(logging.WARNING):
        inputs = policy.prepare_inputs(chat, {"clip": clip, "key": keyframe})
    assert not [r for r in caplog.records if "exceeds limit" in r.getMessage()]
    assert inputs["video_grid_thw"].tolist() == [[16, *grid_hw]]
    video_tokens = int((inputs["mm_token_type_ids"] == 2).sum())
    assert video_tokens == 16 * grid_hw[0] * grid_hw[1] // 4
    assert inputs["second_per_grid_ts"].tolist() == [pytest.approx(seconds_per_slot, rel=1e-6)]
    # the keyframe keeps (nearly) its full resolution under the image budget, sides on the 28 grid
    (model_size,) = policy.model_sizes(inputs["image_grid_thw"])
    assert all(m % 28 == 0 and abs(m - f) <= 14 for m, f in zip(model_size, frame_size, strict=True))
    box = parse_box_answer(
        f'```json\n[{{"bbox_2d": [0, 0, {model_size[1]}, {model_size[0]}], "label": "x"}}]\n```'
    )
    assert isinstance(box, BoxAnswer)
    (mapped,) = to_frame_space(box, model_size=model_size, frame_size=frame_size)  # type: ignore[misc]
    assert mapped.to_list() == pytest.approx([0, 0, frame_size[1], frame_size[0]])


# -- revseg inspect-policy ---------------------------------------------------------------------------


def test_inspect_policy_reports_what_a_run_uses(
    released_dir: Path, tiny_policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from revseg_agent.app.cli import main

    assert main(["inspect-policy", str(released_dir)]) == 0
    out = capsys.readouterr().out
    assert "<|box_start|> 151648" in out and "<|video_pad|> 151656" in out
    assert "image budget (pixels): 3136..12845056" in out
    assert "video budget per frame (pixels): 3136..602112" in out
    assert "repetition_penalty: 1.05 -> 1.0" in out and "top_k: 1 -> 'SamplingParams'" in out
    assert "frame-per-slot: 16 frame ids -> 32 frames fed -> 16 temporal slots" in out
    assert '"bbox_2d"' in out and "M-RoPE after a video" in out
    assert "warning" not in out  # this is the released setup
    assert main(["inspect-policy", str(tiny_policy_dir), "--frame-layout", "paired", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["facts"]["frame layout"].endswith("16 frames fed -> 8 temporal slots")
    assert any("image budget" in w for w in report["warnings"])  # the tiny test budgets differ
    assert any("tokenizer ids differ" in w for w in report["warnings"])


def test_inspect_policy_on_a_missing_folder_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from revseg_agent.app.cli import main

    assert main(["inspect-policy", str(tmp_path / "nope" / "model")]) == 2
    assert "error:" in capsys.readouterr().err
