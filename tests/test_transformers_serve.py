"""The served policy against a real `transformers serve` process on loopback (not a fake).

The shipped `revseg-tiny` carries a release-like `generation_config.json` (repetition penalty
1.05, top-k 1, as Qwen2.5-VL-7B-Instruct's), which `transformers serve` applies unless told
otherwise: these tests model that trap."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from revseg_agent.graphs.chats import FRAMES_REF, KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.graphs.registry import load_policy, policy_source
from revseg_agent.policies.base import ImageFrame, SamplingParams, VideoFrames
from revseg_agent.policies.frame_layout import DEFAULT_FRAME_LAYOUT
from revseg_agent.policies.served import ServedPolicy, ServedPolicyError, _openai_messages
from revseg_agent.synth.scenes import render_scene

from .conftest import free_port, server_process

pytestmark = pytest.mark.slow

SERVE = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve"]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from transformers.utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serve needs its extra: pip install 'transformers[serving]'")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    folder = policy_source("revseg-tiny")
    cmd = [
        *SERVE,
        folder,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    url = f"http://127.0.0.1:{port}/v1"
    with server_process(cmd, f"{url}/models", log, timeout_s=180):
        yield url


def _frame(seed: int) -> np.ndarray:
    return np.asarray(render_scene(seed, num_frames=2).frames[0])


@pytest.mark.parametrize(
    ("seed", "description"), [(7, "the red circle"), (11, "the blue square"), (23, "the shape")]
)
def test_greedy_round2_answers_equal_the_local_policys(base_url: str, seed: int, description: str) -> None:
    served = ServedPolicy.from_spec(f"served:transformers+{base_url}")
    assert served.server == "transformers"
    local = load_policy("revseg-tiny", device="cpu")
    messages = round2_messages(description)
    visuals = {KEYFRAME_REF: ImageFrame(_frame(seed))}
    sampling = SamplingParams(max_new_tokens=64)  # whole answers: a cut one may end mid-token
    (want,) = local.generate(messages, visuals, sampling=sampling)
    (got,) = served.generate(messages, visuals, sampling=sampling)
    assert got.text == want.text
    assert got.image_sizes == want.image_sizes == [(224, 224)]  # revseg-tiny's keyframe size


def test_without_lifting_the_checkpoints_repetition_penalty_answers_differ(base_url: str) -> None:
    """Why the dialect sends `frequency_penalty: 0`: a plain greedy request is generated with
    the checkpoint's repetition penalty and does not equal the local greedy answer."""
    local = load_policy("revseg-tiny", device="cpu")
    differ = []
    for seed, description in [(7, "the red circle"), (11, "the blue square"), (23, "the shape")]:
        messages, visuals = round2_messages(description), {KEYFRAME_REF: ImageFrame(_frame(seed))}
        (want,) = local.generate(messages, visuals, sampling=SamplingParams(max_new_tokens=64))
        chat, _, _ = _openai_messages(messages, visuals, DEFAULT_FRAME_LAYOUT)
        body = {"model": policy_source("revseg-tiny"), "messages": chat, "max_tokens": 64, "temperature": 0.0}
        reply = httpx.post(f"{base_url}/chat/completions", json=body, timeout=120).json()
        differ.append(reply["choices"][0]["message"]["content"] != want.text)
    assert any(differ), "the checkpoint's repetition penalty changed no answer: the test lost its witness"


def test_requests_it_cannot_serve_faithfully_are_refused(base_url: str) -> None:
    served = ServedPolicy.from_spec(f"served:transformers+{base_url}")
    frame = _frame(7)
    with pytest.raises(ServedPolicyError, match="top_k"):
        served.generate(
            round2_messages("the red circle"),
            {KEYFRAME_REF: ImageFrame(frame)},
            sampling=SamplingParams(do_sample=True, temperature=1.0, max_new_tokens=8),
        )
    video = VideoFrames([frame] * 4, [0, 1, 2, 3], 2.0, 4)
    with pytest.raises(ServedPolicyError, match="video"):
        served.generate(round1_messages("the red circle", [0.0, 0.5, 1.0, 1.5]), {FRAMES_REF: video})


@pytest.mark.parametrize(
    ("spec", "server", "url"),
    [
        ("served:http://127.0.0.1:9/v1#m", "vllm", "http://127.0.0.1:9/v1"),
        ("served:transformers+http://127.0.0.1:9/v1#m", "transformers", "http://127.0.0.1:9/v1"),
    ],
)
def test_the_spec_names_the_servers_dialect(spec: str, server: str, url: str) -> None:
    policy = ServedPolicy.from_spec(spec)  # a model is named: nothing is asked of the server
    assert (policy.server, policy.base_url, policy.model) == (server, url, "m")
