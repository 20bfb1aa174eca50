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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revseg_agent.eval.diagnostics import KeyframeTies, best_sampled_position
from revseg_agent.graphs.chats import FRAMES_REF, KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.parsing import format_box_answer, format_keyframe_answer, to_model_space
from revseg_agent.policies.base import ImageFrame, VideoFrames
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.qwen_inputs import Request
from revseg_agent.policies.token_rows import TokenRow
from revseg_agent.prompts import FRAME_ID_BASE
from revseg_agent.training.data import TrainingSample
from revseg_agent.training.frozen_vision import FrozenVision
from revseg_agent.types import Box
from revseg_agent.video import open_video

logger = logging.getLogger(__name__)


def round1_target(
    query: str,
    position: int,
    description: str | None = None,
    evidence: str | None = None,
    inventory: str | None = None,
) -> str:
    """The ideal round-1 answer: templated reasoning (the query, the video's objects when given,
    the evidence that resolves it when known, the keyframe) and the description round 2 grounds
    (the query when unknown)."""
    why = "".join(f" {part.strip()}" for part in (inventory, evidence) if part)
    think = (
        f"The query asks for {query.strip()}.{why} "
        f"It is most clearly visible in frame {FRAME_ID_BASE + position}."
    )
    return format_keyframe_answer(think, position, description or query)


def round2_target(boxes: Sequence[Box], label: str) -> str:
    return format_box_answer(boxes, label)


def answer_losses(
    policy: QwenVLPolicy,
    rows: Sequence[TokenRow],
    answers: Sequence[str],
    model: Any = None,
    *,
    vision: FrozenVision | None = None,
) -> torch.Tensor:
    """Cross-entropy `(B,)` of each `answers[i]` (plus the end-of-turn token) after prompt row
    `rows[i]`, from one left-padded forward pass: every row ends with its answer, so the logits
    kept are the last positions alone (`logits_to_keep`). `model` runs the forward instead of
    `policy.model` (a DeepSpeed engine: its hooks run); `vision` supplies cached visual tokens
    of a frozen tower instead of the patches."""
    from trl.trainer.utils import selective_log_softmax

    tokenizer = policy.processor.tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    targets = [tokenizer(a, add_special_tokens=False)["input_ids"] + [end] for a in answers]
    full = [row + TokenRow.text(t) for row, t in zip(rows, targets, strict=True)]
    batch = policy.inputs.collate(full)
    batch = {k: v.to(policy.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if vision is not None:
        batch = vision.inputs(batch, full)
    width = max(len(t) for t in targets)
    forward = model if model is not None else policy.model
    logits = forward(**batch, logits_to_keep=width + 1).logits.float()  # (B, width + 1, V)
    losses = []
    for b, target in enumerate(targets):
        n = len(target)
        ids = batch["input_ids"][b, -n:]
        losses.append(-selective_log_softmax(logits[b, width - n : width], ids).mean())
    return torch.stack(losses)


@dataclass(frozen=True)
class ChainExample:
    """One sample's supervised chain: round 1's request and ideal answer, round 2's request
    (continuing the conversation) and the target boxes on its keyframe, in frame pixels."""

    round1: Request
    answer1: str
    round2: Request
    boxes: tuple[Box, ...]
    label: str
    frame_size: tuple[int, int]


def chain_example(
    sample: TrainingSample,
    num_frames: int,
    *,
    inventory: bool = False,
    keyframe_ties: KeyframeTies = "first",
) -> ChainExample:
    """The ideal chain for `sample` on `num_frames` sampled frames: the keyframe is the sampled
    frame where the target is largest (of several, as `keyframe_ties` says), its boxes those of
    every target there; round 1's reasoning lists the video's objects first when `inventory`
    (and the sample has them)."""
    video = open_video(sample.video_path)
    sampled = video.sample(num_frames)
    masks, objects = sample.truth()
    position = best_sampled_position(masks, sampled.indices, ties=keyframe_ties)
    key = sampled.indices[position]
    messages = round1_messages(sample.asked or sample.query, sampled.timestamps)
    frames = VideoFrames(video.read(sampled.indices), list(sampled.indices), video.info.fps, video.num_frames)
    label = sample.description or sample.query
    answer1 = round1_target(
        sample.query, position, label, sample.evidence, sample.inventory if inventory else None
    )
    # Round 2 asks for what round 1 answered, as the graph's spatial-grounding node does (it
    # reads `description` from round 1's answer), not for the query.
    history = round2_messages(label, round1=messages, round1_answer=answer1)
    visuals: dict[str, Any] = {FRAMES_REF: frames, KEYFRAME_REF: ImageFrame(video.frame(key))}
    boxes = tuple(b for b in (Box.from_mask(o[key]) for o in objects) if b is not None)
    return ChainExample(
        round1=(messages, {FRAMES_REF: frames}),
        answer1=answer1,
        round2=(history, visuals),
        boxes=boxes,
        label=label,
        frame_size=(video.info.height, video.info.width),
    )


def chain_losses(
    policy: QwenVLPolicy,
    samples: Sequence[TrainingSample],
    num_frames: int,
    *,
    model: Any = None,
    inventory: bool = False,
    keyframe_ties: KeyframeTies = "first",
    vision: FrozenVision | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy `(B,)` of the ideal round-1 and round-2 answers of each sample, each round
    one batched forward. A sample whose target is absent on every sampled frame has no round-2
    target: its round-2 loss is 0 (and adds no gradient). `vision`: see `answer_losses`."""
    examples = [
        chain_example(s, num_frames, inventory=inventory, keyframe_ties=keyframe_ties) for s in samples
    ]
    rows1 = policy.inputs.rows([e.round1 for e in examples])
    loss1 = answer_losses(policy, rows1, [e.answer1 for e in examples], model, vision=vision)
    grounded = [k for k, e in enumerate(examples) if e.boxes]
    loss2 = torch.zeros(len(examples), device=loss1.device)
    if grounded:
        chosen = [examples[k] for k in grounded]
        rows2 = policy.inputs.rows([e.round2 for e in chosen])
        answers = [
            box_answer(policy, row, e.frame_size, e.boxes, e.label)
            for row, e in zip(rows2, chosen, strict=True)
        ]
        loss2 = loss2.index_put(
            (torch.tensor(grounded, device=loss1.device),),
            answer_losses(policy, rows2, answers, model, vision=vision),
        )
    return loss1, loss2


def sft_losses(
    policy: QwenVLPolicy, sample: TrainingSample, num_frames: int, *, model: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the ideal round-1 and round-2 answers for one sample."""
    loss1, loss2 = chain_losses(policy, [sample], num_frames, model=model)
    return loss1[0], loss2[0]


def keyframe_box_loss(
    policy: QwenVLPolicy, frame: np.ndarray, label: str, boxes: Sequence[Box], *, model: Any = None
) -> torch.Tensor:
    """Cross-entropy of round 2's ideal answer alone (no history) for one frame, `boxes` in the
    frame's pixels (written in the model's resized pixels, as the released model answers)."""
    return keyframe_box_losses(policy, [(frame, label, boxes)], model=model)[0]


def keyframe_box_losses(
    policy: QwenVLPolicy,
    items: Sequence[tuple[np.ndarray, str, Sequence[Box]]],
    *,
    model: Any = None,
    vision: FrozenVision | None = None,
) -> torch.Tensor:
    """`keyframe_box_loss` of each `(frame, label, boxes)` item `(B,)`, from one batched forward
    (`vision`: see `answer_losses`)."""
    rows = policy.inputs.rows(
        [(round2_messages(label), {KEYFRAME_REF: ImageFrame(frame)}) for frame, label, _ in items]
    )
    answers = [
        box_answer(policy, row, (int(frame.shape[0]), int(frame.shape[1])), boxes, label)
        for row, (frame, label, boxes) in zip(rows, items, strict=True)
    ]
    return answer_losses(policy, rows, answers, model, vision=vision)


def box_answer(
    policy: QwenVLPolicy, row: TokenRow, frame_size: tuple[int, int], boxes: Sequence[Box], label: str
) -> str:
    """The round-2 answer whose boxes are `boxes` (frame pixels) written as the policy's family
    answers for the keyframe as `row` feeds it (its last image): Qwen2.5-VL in that image's
    pixels, Qwen3-VL in 0-1000 units."""
    grid = torch.stack([b.grid for b in row.blocks if b.kind == "image"])
    model_size = policy.model_sizes(grid)[-1]
    written = to_model_space(boxes, units=policy.box_units, model_size=model_size, frame_size=frame_size)
    return round2_target(written, label)


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
