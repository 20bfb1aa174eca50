"""Replay a recorded policy call through the policy: per-token log-probs of what it wrote.

Why: TRL's `GRPOTrainer` computes its loss without video features, so ReVSeg's chain (round 1
sees a video, round 2 the keyframe) is trained by replaying graph traces. A trace step holds the
messages with visuals by reference, the prompt token ids, the completion token ids and the
sampling-time log-probs; replay rebuilds the exact model inputs from the video file, checks the
prompt tokenises to the recorded ids (a trace from another tokenizer or processor is refused),
appends the completion and reads the log-probs from one forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from revseg_agent.errors import RevsegError
from revseg_agent.graphs.traces import StepRecord, VisualRecord
from revseg_agent.policies.base import ImageFrame, VideoFrames, Visual
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.video import FrameCache, open_video


class ReplayError(RevsegError):
    """A trace step cannot be replayed by this policy (other tokenizer, missing visuals, ...)."""


def load_visuals(
    records: Mapping[str, VisualRecord], frames_cache: FrameCache | None = None
) -> dict[str, Visual]:
    """Decode the frames a step referenced, from the video they came from (through `frames_cache`
    when given: the G rollouts of a sample then decode each frame once)."""
    out: dict[str, Visual] = {}
    for ref, record in records.items():
        try:
            if frames_cache is not None:
                video = frames_cache.video(record.video_path, fps=record.fps)
                frames = frames_cache.read(record.video_path, record.frame_indices, fps=record.fps)
            else:
                video = open_video(record.video_path, fps=record.fps)
                frames = video.read(record.frame_indices)
        except RevsegError as exc:
            raise ReplayError(f"visual {ref!r} of the trace cannot be read: {exc}") from exc
        if record.kind == "image":
            out[ref] = ImageFrame(frames[0])
        else:
            out[ref] = VideoFrames(
                frames=frames,
                frame_indices=record.frame_indices,
                fps=record.fps or video.info.fps,
                total_num_frames=record.total_num_frames or video.num_frames,
            )
    return out


def replay_inputs(
    policy: QwenVLPolicy, step: StepRecord, frames_cache: FrameCache | None = None
) -> dict[str, Any]:
    """Model inputs for prompt + completion of one step, checked against the recorded prompt."""
    if not step.completion_ids:
        raise ReplayError(f"step {step.node}#{step.attempt} has no completion to replay")
    inputs = policy.prepare_inputs(step.messages, load_visuals(step.visuals, frames_cache))
    prompt = inputs["input_ids"][0].tolist()
    if prompt != step.prompt_ids:
        raise ReplayError(
            f"step {step.node}#{step.attempt}: the prompt tokenises differently from the trace "
            "(another policy version, tokenizer or processor?)"
        )
    return append_completion(inputs, step.completion_ids)


def append_completion(inputs: dict[str, Any], completion_ids: Sequence[int]) -> dict[str, Any]:
    """Prompt inputs (one row) extended by completion tokens, for teacher-forced forward passes."""
    completion = torch.tensor([list(completion_ids)], dtype=inputs["input_ids"].dtype)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:  # completion tokens are text (type 0) for M-RoPE positions
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
        )
    return inputs


def replay_logprobs(policy: QwenVLPolicy, step: StepRecord, *, temperature: float = 1.0) -> torch.Tensor:
    """Per-token log-probs `(completion length,)` of the step's completion under `policy`.

    Gradients flow when called outside `torch.no_grad()` (the training loss uses this).
    """
    (logprobs,) = run_plan(policy, plan_replay(policy, [step], each_alone=True), temperature)
    return logprobs


@dataclass
class ReplayPlan:
    """The forward passes that score a rollout's steps: one-row model inputs and the
    `(start, length)` spans of the completions each pass scores, in step order. Built once, a plan
    serves the policy and the KL reference alike (same inputs, other weights)."""

    passes: list[tuple[dict[str, Any], list[tuple[int, int]]]]


def plan_replay(
    policy: QwenVLPolicy,
    steps: Sequence[StepRecord],
    *,
    frames_cache: FrameCache | None = None,
    each_alone: bool = False,
) -> ReplayPlan:
    """As few passes as possible: when the last step's prompt contains an earlier step's prompt and
    completion verbatim (ReVSeg's two-round conversation: round 2 continues round 1; the graph
    feeds round 1's sampled ids back, so this is the usual case), one pass over the last step
    scores both, since causal attention makes the earlier tokens' log-probs exactly those of their
    own pass. Otherwise (or with `each_alone`) one pass per step."""
    if not each_alone and len(steps) == 2 and _spliced(steps[0], steps[1]):
        first, last = steps
        spans = [
            (len(first.prompt_ids), len(first.completion_ids)),
            (len(last.prompt_ids), len(last.completion_ids)),
        ]
        return ReplayPlan([(replay_inputs(policy, last, frames_cache), spans)])
    return ReplayPlan(
        [
            (replay_inputs(policy, step, frames_cache), [(len(step.prompt_ids), len(step.completion_ids))])
            for step in steps
        ]
    )


def run_plan(
    policy: QwenVLPolicy, plan: ReplayPlan, temperature: float, *, model: Any = None
) -> list[torch.Tensor]:
    """Per-token log-probs of every planned step under `policy` (gradients flow outside
    `torch.no_grad()`). `model`: what runs the forward instead of `policy.model`, e.g. the
    DeepSpeed engine wrapping it, so its forward hooks run (ZeRO's pre/post forward)."""
    return [
        lp
        for inputs, spans in plan.passes
        for lp in span_logprobs(policy, inputs, spans, temperature, model=model)
    ]


def span_logprobs(
    policy: QwenVLPolicy,
    inputs: dict[str, Any],
    spans: Sequence[tuple[int, int]],
    temperature: float,
    *,
    model: Any = None,
) -> list[torch.Tensor]:
    """Log-probs of the tokens in each `(start, length)` span of a one-row input, from one forward
    pass. Logits are computed only at the positions that predict those tokens (`logits_to_keep`):
    a long video prompt never meets the vocabulary-sized output layer. TRL's
    `selective_log_softmax` turns them into log-probs without a full log-softmax tensor."""
    from trl.trainer.utils import selective_log_softmax

    device = policy.device
    model_inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    positions = torch.cat([torch.arange(start - 1, start - 1 + n) for start, n in spans]).to(device)
    forward = model if model is not None else policy.model
    logits = forward(**model_inputs, logits_to_keep=positions).logits[0].float()  # (tokens, V)
    targets = model_inputs["input_ids"][0, positions + 1]
    logprobs = selective_log_softmax(logits, targets, temperature=temperature)
    return list(torch.split(logprobs, [n for _, n in spans]))


def _spliced(round1: StepRecord, round2: StepRecord) -> bool:
    """True when round 2's prompt holds round 1's prompt and completion tokens verbatim (then
    one forward pass over round 2 scores both rounds)."""
    n1, c1 = len(round1.prompt_ids), len(round1.completion_ids)
    return (
        bool(round1.completion_ids)
        and round2.prompt_ids[:n1] == round1.prompt_ids
        and round2.prompt_ids[n1 : n1 + c1] == round1.completion_ids
    )


def replay_rounds(
    policy: QwenVLPolicy, steps: Sequence[StepRecord], *, temperature: float = 1.0
) -> list[torch.Tensor]:
    """Per-token log-probs for each step of a rollout, in as few forward passes as possible
    (see `plan_replay`)."""
    return run_plan(policy, plan_replay(policy, steps), temperature)
