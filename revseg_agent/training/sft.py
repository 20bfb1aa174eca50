"""Supervised warm start: teach a policy the two-round answer format from ground truth.

For each training sample the targets are what a perfect chain would answer: round 1 names the
sampled frame where the object is largest and describes it with the query itself; round 2 gives
the object's box on that keyframe, in the model's resized-image pixels. The prompts are exactly
the graph's (`graphs.chats`: round 2 continuing the conversation), so a policy
warmed up here answers in the format the graph parses and GRPO rewards. Loss: cross-entropy on
the answer tokens only. The loop that trains on these losses is `sft_trainer.SFTTrainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revseg_agent.eval.diagnostics import best_sampled_position
from revseg_agent.graphs.chats import FRAMES_REF, KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.parsing import format_box_answer, format_keyframe_answer
from revseg_agent.policies.base import ImageFrame, VideoFrames
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.prompts import FRAME_ID_BASE
from revseg_agent.training.data import TrainingSample
from revseg_agent.training.replay import append_completion, span_logprobs
from revseg_agent.types import Box
from revseg_agent.video import open_video

logger = logging.getLogger(__name__)


def round1_target(
    query: str, position: int, description: str | None = None, evidence: str | None = None
) -> str:
    """The ideal round-1 answer: templated reasoning (the query, the evidence that resolves it
    when known, the keyframe) and the description round 2 grounds (the query when unknown)."""
    why = f" {evidence.strip()}" if evidence else ""
    think = (
        f"The query asks for {query.strip()}.{why} "
        f"It is most clearly visible in frame {FRAME_ID_BASE + position}."
    )
    return format_keyframe_answer(think, position, description or query)


def round2_target(boxes: Sequence[Box], label: str) -> str:
    return format_box_answer(boxes, label)


def _answer_loss(
    policy: QwenVLPolicy, inputs: dict[str, Any], answer: str, model: Any = None
) -> torch.Tensor:
    """Cross-entropy of `answer` (plus the end-of-turn token) after the prepared prompt `inputs`;
    `model` runs the forward instead of `policy.model` (a DeepSpeed engine: its hooks run)."""
    tokenizer = policy.processor.tokenizer
    target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    prompt_len = int(inputs["input_ids"].shape[1])
    (logprobs,) = span_logprobs(
        policy, append_completion(inputs, target), [(prompt_len, len(target))], 1.0, model=model
    )
    return -logprobs.mean()  # cross-entropy of the answer tokens


def sft_losses(
    policy: QwenVLPolicy, sample: TrainingSample, num_frames: int, *, model: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the ideal round-1 and round-2 answers for one sample."""
    video = open_video(sample.video_path)
    sampled = video.sample(num_frames)
    masks, objects = sample.truth()
    position = best_sampled_position(masks, sampled.indices)
    key = sampled.indices[position]
    messages = round1_messages(sample.query, sampled.timestamps)
    frames = VideoFrames(video.read(sampled.indices), list(sampled.indices), video.info.fps, video.num_frames)
    answer1 = round1_target(sample.query, position, sample.description, sample.evidence)
    loss1 = _answer_loss(policy, policy.prepare_inputs(messages, {FRAMES_REF: frames}), answer1, model)
    history = round2_messages(sample.query, round1=messages, round1_answer=answer1)
    visuals: dict[str, Any] = {FRAMES_REF: frames, KEYFRAME_REF: ImageFrame(video.frame(key))}
    inputs = policy.prepare_inputs(history, visuals)  # prepared once: sizes the box, then scores it
    boxes = [b for b in (Box.from_mask(o[key]) for o in objects) if b is not None]
    if not boxes:  # the target is absent on every sampled frame: no grounding target
        return loss1, torch.zeros((), device=loss1.device)
    frame_size = (video.info.height, video.info.width)
    label = sample.description or sample.query
    return loss1, _box_answer_loss(policy, inputs, frame_size, boxes, label, model)


def grounding_loss(
    policy: QwenVLPolicy,
    sample: TrainingSample,
    frame_index: int,
    objects: Sequence[np.ndarray] | None = None,
    *,
    model: Any = None,
) -> torch.Tensor | None:
    """Cross-entropy of round 2 alone (no history) on one frame where the target is visible: the
    curriculum's first stage, where a policy learns to find a described object in one image
    before it meets videos (None when no target is visible on that frame)."""
    if objects is None:
        objects = sample.truth()[1]
    boxes = [b for b in (Box.from_mask(o[frame_index]) for o in objects) if b is not None]
    if not boxes:
        return None
    frame = open_video(sample.video_path).frame(frame_index)
    return keyframe_box_loss(policy, frame, sample.description or sample.query, boxes, model=model)


def keyframe_box_loss(
    policy: QwenVLPolicy, frame: np.ndarray, label: str, boxes: Sequence[Box], *, model: Any = None
) -> torch.Tensor:
    """Cross-entropy of round 2's ideal answer alone (no history) for one frame, `boxes` in the
    frame's pixels (written in the model's resized pixels, as the released model answers)."""
    inputs = policy.prepare_inputs(round2_messages(label), {KEYFRAME_REF: ImageFrame(frame)})
    return _box_answer_loss(policy, inputs, (int(frame.shape[0]), int(frame.shape[1])), boxes, label, model)


def _box_answer_loss(
    policy: QwenVLPolicy,
    inputs: dict[str, Any],
    frame_size: tuple[int, int],
    boxes: Sequence[Box],
    label: str,
    model: Any = None,
) -> torch.Tensor:
    """Cross-entropy of the round-2 answer whose boxes are `boxes` (frame pixels) written in the
    pixels of the keyframe as `inputs` fed it (the last image)."""
    model_size = QwenVLPolicy.model_sizes(inputs["image_grid_thw"])[-1]
    return _answer_loss(
        policy, inputs, round2_target([b.rescale(frame_size, model_size) for b in boxes], label), model
    )


def save_policy(policy: QwenVLPolicy, output_dir: str | Path, max_new_tokens: int | None = None) -> Path:
    """The policy in Hugging Face layout, written beside `output_dir` and swapped in whole. LoRA
    adapters are merged into the weights first (`merge_and_unload`: the model is a plain one
    afterwards), so the folder loads as `--policy` anywhere, vLLM included."""
    from revseg_agent.io import atomic_output_dir
    from revseg_agent.policies.frame_layout import write_checkpoint_settings
    from revseg_agent.training.checkpoint import record_token_budget

    out = Path(output_dir)
    if hasattr(policy.model, "merge_and_unload"):  # a PEFT model
        policy.model = policy.model.merge_and_unload()
    with atomic_output_dir(out, overwrite=True, kind="policy") as tmp:
        record_token_budget(policy.model, max_new_tokens)
        policy.model.save_pretrained(tmp, safe_serialization=True)
        policy.processor.save_pretrained(tmp)
        write_checkpoint_settings(tmp, frame_timing=policy.frame_timing)
    logger.info("saved the SFT policy to %s", out)
    return out
