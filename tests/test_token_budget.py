"""One token budget: a run writes as many new tokens per round as its policy was trained with,
unless it says otherwise; retries get the same budget; `revseg train` records it in the
checkpoint's `generation_config.json` and `inspect-policy` shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from revseg_agent.graphs.chats import round2_messages
from revseg_agent.graphs.context import Context
from revseg_agent.policies.base import DEFAULT_MAX_NEW_TOKENS, ImageFrame, SamplingParams, token_budget
from revseg_agent.policies.inspect import inspect_policy
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.testing import BoxTracker, ScriptedPolicy
from revseg_agent.training.sft import save_policy

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("asked", "trained", "used"),
    [
        (None, None, DEFAULT_MAX_NEW_TOKENS),  # neither says: the 7B recipes' 1024
        (None, 160, 160),  # the checkpoint's own
        (48, 160, 48),  # the run's explicit setting wins
    ],
)
def test_the_budget_rule(asked: int | None, trained: int | None, used: int) -> None:
    assert token_budget(SamplingParams(max_new_tokens=asked), trained) == used


@pytest.mark.parametrize("asked", [None, 16])
def test_a_retry_writes_as_much_as_the_first_attempt(asked: int | None) -> None:
    context = Context(
        policy=ScriptedPolicy(), tracker=BoxTracker(), sampling=SamplingParams(max_new_tokens=asked)
    )
    retry = context.attempt_sampling("semantic_interpretation", "q", 2)
    assert retry.do_sample and retry.max_new_tokens == asked  # was 512 whatever the run asked


def test_a_trained_checkpoint_records_its_budget_and_runs_default_to_it(
    tiny_policy_dir: Path, tmp_path: Path
) -> None:
    untrained = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    assert untrained.trained_max_new_tokens is None
    assert inspect_policy(str(tiny_policy_dir)).facts["max_new_tokens"].startswith("1024 (not recorded")
    save_policy(untrained, tmp_path / "sft", max_new_tokens=6)  # what `revseg train sft` saves
    saved = json.loads((tmp_path / "sft" / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 6
    policy = QwenVLPolicy.from_pretrained(tmp_path / "sft", device="cpu")
    assert policy.trained_max_new_tokens == 6
    assert (
        inspect_policy(str(tmp_path / "sft"))
        .facts["max_new_tokens"]
        .startswith("6 (what it was trained with")
    )

    keyframe = {"keyframe": ImageFrame(np.zeros((56, 56, 3), np.uint8))}
    lengths = {
        asked: len(
            policy.generate(round2_messages("x"), keyframe, sampling=SamplingParams(max_new_tokens=asked))[
                0
            ].completion_ids
        )
        for asked in (None, 3)
    }
    assert lengths[None] <= 6 and lengths[3] <= 3 and lengths[None] > 3  # a random model rarely stops early
