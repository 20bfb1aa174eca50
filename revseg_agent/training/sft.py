"""Supervised warm start: teach a policy the two-round answer format from ground truth.

For each training sample the targets are what a perfect chain would answer: round 1 names the
sampled frame where the object is largest and describes it with the query itself; round 2 gives
the object's box on that keyframe, in the model's resized-image pixels. The prompts are exactly
the graph's (`graphs.chats`: round 2 continuing the conversation), so a policy
warmed up here answers in the format the graph parses and GRPO rewards. Loss: cross-entropy on
the answer tokens only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
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


def _answer_loss(policy: QwenVLPolicy, inputs: dict[str, Any], answer: str) -> torch.Tensor:
    """Cross-entropy of `answer` (plus the end-of-turn token) after the prepared prompt `inputs`."""
    tokenizer = policy.processor.tokenizer
    target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [
        tokenizer.convert_tokens_to_ids("<|im_end|>")
    ]
    prompt_len = int(inputs["input_ids"].shape[1])
    (logprobs,) = span_logprobs(policy, append_completion(inputs, target), [(prompt_len, len(target))], 1.0)
    return -logprobs.mean()  # cross-entropy of the answer tokens


def sft_losses(
    policy: QwenVLPolicy, sample: TrainingSample, num_frames: int
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
    loss1 = _answer_loss(policy, policy.prepare_inputs(messages, {FRAMES_REF: frames}), answer1)
    history = round2_messages(sample.query, round1=messages, round1_answer=answer1)
    visuals: dict[str, Any] = {FRAMES_REF: frames, KEYFRAME_REF: ImageFrame(video.frame(key))}
    inputs = policy.prepare_inputs(history, visuals)  # prepared once: sizes the box, then scores it
    boxes = [b for b in (Box.from_mask(o[key]) for o in objects) if b is not None]
    if not boxes:  # the target is absent on every sampled frame: no grounding target
        return loss1, torch.zeros((), device=loss1.device)
    frame_size = (video.info.height, video.info.width)
    return loss1, _box_answer_loss(policy, inputs, frame_size, boxes, sample.description or sample.query)


def grounding_loss(
    policy: QwenVLPolicy,
    sample: TrainingSample,
    frame_index: int,
    objects: Sequence[np.ndarray] | None = None,
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
    return keyframe_box_loss(policy, frame, sample.description or sample.query, boxes)


def keyframe_box_loss(
    policy: QwenVLPolicy, frame: np.ndarray, label: str, boxes: Sequence[Box]
) -> torch.Tensor:
    """Cross-entropy of round 2's ideal answer alone (no history) for one frame, `boxes` in the
    frame's pixels (written in the model's resized pixels, as the released model answers)."""
    inputs = policy.prepare_inputs(round2_messages(label), {KEYFRAME_REF: ImageFrame(frame)})
    return _box_answer_loss(policy, inputs, (int(frame.shape[0]), int(frame.shape[1])), boxes, label)


def _box_answer_loss(
    policy: QwenVLPolicy,
    inputs: dict[str, Any],
    frame_size: tuple[int, int],
    boxes: Sequence[Box],
    label: str,
) -> torch.Tensor:
    """Cross-entropy of the round-2 answer whose boxes are `boxes` (frame pixels) written in the
    pixels of the keyframe as `inputs` fed it (the last image)."""
    model_size = QwenVLPolicy.model_sizes(inputs["image_grid_thw"])[-1]
    return _answer_loss(
        policy, inputs, round2_target([b.rescale(frame_size, model_size) for b in boxes], label)
    )


def train_sft(
    policy: QwenVLPolicy,
    samples: Sequence[TrainingSample],
    *,
    steps: int,
    learning_rate: float = 1e-4,
    batch_size: int = 2,
    num_frames: int = 16,
    output_dir: str | Path | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
    warmup_steps: int = 0,
    save_every: int | None = None,
    grounding_steps: int = 0,
    grounding_batch_size: int = 16,
    seed: int = 0,
    max_new_tokens: int | None = None,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
) -> list[dict[str, float]]:
    """A plain supervised loop (AdamW with fp32 masters for half-precision weights, linear warm-up
    then cosine decay when `warmup_steps` > 0, gradients clipped to `max_grad_norm`); saves the
    policy to `output_dir` (safetensors) every `save_every` steps and at the end, recording
    `max_new_tokens` (the budget the policy will answer with) in its generation config. The first
    `grounding_steps` steps are the curriculum's grounding stage (`grounding_loss` on random frames
    of random samples, `grounding_batch_size` a step); the rest train both rounds of the chain
    (`sft_losses`)."""
    import numpy as np
    from transformers import get_cosine_schedule_with_warmup

    from revseg_agent.training.optim import build_optimizer, clip_gradients

    model = policy.model
    # fp32 masters for half-precision weights, as GRPO's: AdamW on bf16 weights rounds an update
    # of lr 1e-5 away (bf16's spacing near 0.02 is 1.2e-4)
    optimizer = build_optimizer(
        model.parameters(), learning_rate=learning_rate, weight_decay=weight_decay, master_weights=True
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, warmup_steps, steps) if warmup_steps > 0 else None
    rng = np.random.default_rng(seed)
    history = []
    for step in range(1, steps + 1):
        started = time.time()
        model.train()
        total1 = total2 = 0.0
        if step <= grounding_steps:
            done = 0
            while done < grounding_batch_size:
                sample = samples[int(rng.integers(len(samples)))]
                masks, objects = sample.truth()
                loss = grounding_loss(policy, sample, int(rng.integers(len(masks))), objects)
                if loss is None:
                    continue
                (loss / grounding_batch_size).backward()
                total2 += float(loss.detach()) / grounding_batch_size
                done += 1
        else:
            k = step - grounding_steps - 1
            batch = [samples[(k * batch_size + i) % len(samples)] for i in range(batch_size)]
            for sample in batch:
                loss1, loss2 = sft_losses(policy, sample, num_frames)
                ((loss1 + loss2) / len(batch)).backward()
                total1 += float(loss1.detach()) / len(batch)
                total2 += float(loss2.detach()) / len(batch)
        clip_gradients(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if schedule is not None:
            schedule.step()
        model.eval()
        row = {
            "step": float(step),
            "stage": 1.0 if step <= grounding_steps else 2.0,
            "loss_round1": total1,
            "loss_round2": total2,
            "seconds": time.time() - started,
        }
        history.append(row)
        if on_step is not None:
            on_step(row)
        if output_dir is not None and save_every and step % save_every == 0 and step < steps:
            save_policy(policy, output_dir, max_new_tokens)
    if output_dir is not None:
        save_policy(policy, output_dir, max_new_tokens)
    return history


def save_policy(policy: QwenVLPolicy, output_dir: str | Path, max_new_tokens: int | None = None) -> Path:
    """The policy in Hugging Face layout, written beside `output_dir` and swapped in whole."""
    from revseg_agent.io import atomic_output_dir
    from revseg_agent.policies.frame_layout import write_checkpoint_settings
    from revseg_agent.training.checkpoint import record_token_budget

    out = Path(output_dir)
    with atomic_output_dir(out, overwrite=True, kind="policy") as tmp:
        record_token_budget(policy.model, max_new_tokens)
        policy.model.save_pretrained(tmp, safe_serialization=True)
        policy.processor.save_pretrained(tmp)
        write_checkpoint_settings(tmp, frame_timing=policy.frame_timing)
    logger.info("saved the SFT policy to %s", out)
    return out
