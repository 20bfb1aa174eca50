"""Replaying graph traces through the policy reproduces the sampling-time log-probs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.pipeline import trace_from_state
from revseg_agent.graphs.traces import Trace
from revseg_agent.policies.base import SamplingParams
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.testing import BoxTracker
from revseg_agent.training.replay import ReplayError, replay_logprobs

pytestmark = pytest.mark.slow


def _sampled_run(policy: QwenVLPolicy, clip: Path, artifacts: Path, **settings: object) -> Trace:
    """One sampled run of the graph (temperature 0.9, 12 new tokens, 8 frames) as a trace."""
    context = Context(
        policy=policy,
        tracker=BoxTracker(),
        num_frames=8,
        max_attempts=1,
        on_parse_failure="fallback",
        sampling=SamplingParams(do_sample=True, temperature=0.9, max_new_tokens=12, seed=7),
        artifacts_dir=artifacts,
        **settings,  # type: ignore[arg-type]
    )
    state = build_graph().invoke({"video_path": str(clip), "query": "the red square"}, context=context)
    return trace_from_state(state, context)


@pytest.fixture(scope="module", params=["qwen2.5-vl", "qwen3-vl"])
def sampled_trace(request: pytest.FixtureRequest, demo_clip: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = request.getfixturevalue(
        "tiny_policy_dir" if request.param == "qwen2.5-vl" else "tiny_qwen3_policy_dir"
    )
    policy = QwenVLPolicy.from_pretrained(folder, device="cpu")
    return policy, _sampled_run(policy, demo_clip, tmp_path_factory.mktemp("art"))


@pytest.mark.parametrize("node", ["semantic_interpretation", "spatial_grounding"])
def test_replayed_logprobs_equal_sampling_time_logprobs(sampled_trace, node: str) -> None:  # type: ignore[no-untyped-def]
    policy, trace = sampled_trace
    step = next(s for s in trace.steps if s.node == node)
    kinds = sorted(v.kind for v in step.visuals.values())
    assert kinds == (["video"] if node == "semantic_interpretation" else ["image", "video"])
    with torch.no_grad():
        replayed = replay_logprobs(policy, step, temperature=0.9)
    np.testing.assert_allclose(replayed.numpy(), step.logprobs, atol=1e-5)


def test_replay_has_gradients(sampled_trace) -> None:  # type: ignore[no-untyped-def]
    policy, trace = sampled_trace
    step = trace.steps[1]
    logprobs = replay_logprobs(policy, step, temperature=0.9)
    logprobs.sum().backward()
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    policy.model.zero_grad()


def test_a_trace_from_another_tokenizer_is_refused(sampled_trace) -> None:  # type: ignore[no-untyped-def]
    policy, trace = sampled_trace
    step = trace.steps[1].model_copy(update={"prompt_ids": [1, 2, 3]})
    with pytest.raises(ReplayError, match="tokenises differently"):
        replay_logprobs(policy, step)


def test_missing_visuals_are_a_clear_error(sampled_trace, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policy, trace = sampled_trace
    step = trace.steps[1]
    visuals = {
        k: v.model_copy(update={"video_path": str(tmp_path / "gone.mp4")}) for k, v in step.visuals.items()
    }
    with pytest.raises(ReplayError, match="cannot be read"):
        replay_logprobs(policy, step.model_copy(update={"visuals": visuals}))


def _count_forwards(policy, fn):  # type: ignore[no-untyped-def]
    calls: list[int] = []
    hook = policy.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            result = fn()
    finally:
        hook.remove()
    return result, len(calls)


def test_both_rounds_in_one_forward_pass_when_round2_holds_round1(sampled_trace) -> None:  # type: ignore[no-untyped-def]
    """Token-in/token-out: round 2's prompt holds round 1's prompt and sampled ids verbatim (even
    when a random model's ids do not re-tokenise canonically), so one pass scores both rounds,
    with the sampling-time log-probs."""
    from revseg_agent.training.replay import replay_rounds

    policy, trace = sampled_trace
    r1, r2 = [s for s in trace.steps if s.completion_ids]
    n1, c1 = len(r1.prompt_ids), len(r1.completion_ids)
    assert r2.prompt_ids[:n1] == r1.prompt_ids and r2.prompt_ids[n1 : n1 + c1] == r1.completion_ids
    assert [m.token_ids for m in r2.messages if m.role == "assistant"] == [r1.completion_ids]
    projected: list[int] = []  # positions that reach the vocabulary-sized output layer
    hook = policy.model.lm_head.register_forward_hook(
        lambda _m, args, _o: projected.append(args[0].shape[-2])
    )
    try:
        both, forwards = _count_forwards(policy, lambda: replay_rounds(policy, [r1, r2], temperature=0.9))
    finally:
        hook.remove()
    assert forwards == 1
    assert projected == [c1 + len(r2.completion_ids)]  # not the whole video prompt
    for step, logprobs in zip([r1, r2], both, strict=True):
        np.testing.assert_allclose(logprobs.numpy(), step.logprobs, atol=1e-4)


def test_rounds_fall_back_to_one_pass_each(tiny_policy_dir: Path, demo_clip: Path, tmp_path: Path) -> None:
    """Round 2 without the round-1 history: each round is replayed on its own."""
    from revseg_agent.training.replay import replay_rounds

    policy = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    trace = _sampled_run(policy, demo_clip, tmp_path, round2_with_history=False)
    steps = [s for s in trace.steps if s.completion_ids]
    both, forwards = _count_forwards(policy, lambda: replay_rounds(policy, steps, temperature=0.9))
    assert forwards == 2
    for step, logprobs in zip(steps, both, strict=True):
        np.testing.assert_allclose(logprobs.numpy(), step.logprobs, atol=1e-4)


def test_a_plan_is_built_once_and_decodes_each_frame_once(sampled_trace) -> None:  # type: ignore[no-untyped-def]
    """The trainer builds a rollout's inputs once for the policy and the KL reference, and the
    rollouts of a sample share decoded frames."""
    from revseg_agent.training.replay import plan_replay, run_plan
    from revseg_agent.video import FrameCache

    policy, trace = sampled_trace
    steps = [s for s in trace.steps if s.completion_ids]
    cache = FrameCache()
    plan = plan_replay(policy, steps, frames_cache=cache)
    decoded = cache.decoded
    again = plan_replay(policy, steps, frames_cache=cache)  # a second rollout of the same sample
    assert cache.decoded == decoded == len(set(steps[0].visuals["frames"].frame_indices))
    with torch.no_grad():
        first, second = run_plan(policy, plan, 0.9), run_plan(policy, again, 0.9)
    for a, b, step in zip(first, second, steps, strict=True):
        assert torch.equal(a, b)
        np.testing.assert_allclose(a.numpy(), step.logprobs, atol=1e-4)
