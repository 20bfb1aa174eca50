"""A policy behind an OpenAI-compatible server (vLLM, SGLang), against a fake server on loopback."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from revseg_agent.errors import CheckpointError
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.policies.base import SamplingParams
from revseg_agent.policies.frame_layout import MAX_FED_FPS
from revseg_agent.policies.served import ServedPolicy, ServedPolicyError
from revseg_agent.testing import BoxTracker

ROUND1 = "<think>clearest here</think><answer>frame id: 3\nobject description: the red square</answer>"


class FakeChatServer:
    """Answers `/v1/models` and `/v1/chat/completions` like vLLM, with `reply(body)` choosing the
    texts; keeps every request body."""

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], list[str]],
        status: int = 200,
        prompt_ids: Callable[[dict[str, Any]], list[int]] | None = None,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "fake-qwen", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if status != 200:
                    self._send(status, {"error": {"message": "model overloaded"}})
                    return
                choices = [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": {"content": [{"token": c, "logprob": -0.5} for c in text[:5]]},
                        "finish_reason": "stop",
                    }
                    for i, text in enumerate(reply(body))
                ]
                payload: dict[str, Any] = {"id": "x", "object": "chat.completion", "choices": choices}
                if prompt_ids is not None:  # vLLM with return_token_ids
                    payload["prompt_token_ids"] = prompt_ids(body)
                self._send(200, payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _decode(url: str) -> list[Image.Image]:
    header, _, payload = url.partition(",")
    assert header in ("data:image/png;base64", "data:video/jpeg;base64")
    return [Image.open(io.BytesIO(base64.b64decode(p))) for p in payload.split(",")]


def _parts(message: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    content = message["content"]
    return [p for p in content if isinstance(content, list) and p["type"] == kind]


def _answer(body: dict[str, Any]) -> list[str]:
    """Round 1: keyframe 3. Round 2: the whole keyframe, in the coordinates of the image sent."""
    image = [p for m in body["messages"] for p in _parts(m, "image_url")]
    if not image:
        return [ROUND1] * body["n"]
    (keyframe,) = _decode(image[-1]["image_url"]["url"])
    return [f"bbox: [0, 0, {keyframe.width}, {keyframe.height}]"] * body["n"]


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    fake = FakeChatServer(_answer)
    yield fake
    fake.close()


def test_the_graph_runs_against_a_served_model(
    server: FakeChatServer, demo_clip: Path, tmp_path: Path
) -> None:
    policy = ServedPolicy(server.url)  # the model name comes from /v1/models
    assert policy.model == "fake-qwen"
    context = Context(policy=policy, tracker=BoxTracker(), num_frames=8, artifacts_dir=tmp_path)
    state = build_graph().invoke({"video_path": str(demo_clip), "query": "the red square"}, context=context)
    assert state["error"] is None and state["keyframe_position"] == 2  # frame ids count from 1
    height, width = state["frame_size"]
    # the box was written in the resized keyframe and comes back in the frame's own pixels
    np.testing.assert_allclose(state["boxes"], [[0, 0, width, height]], atol=1.0)

    round1, round2 = server.requests
    assert round1["model"] == "fake-qwen" and round1["temperature"] == 0.0 and round1["logprobs"] is True
    (video,) = _parts(round1["messages"][1], "video_url")
    frames = _decode(video["video_url"]["url"])
    # one temporal slot per frame id: each of the 8 sampled frames is sent twice
    assert len(frames) == 16 and all(f.width % 28 == 0 and f.height % 28 == 0 for f in frames)
    pairs = zip(frames[::2], frames[1::2], strict=True)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs)
    indices = state["sampled_indices"]
    real_fps = 2 * state["fps"] * (len(indices) - 1) / (indices[-1] - indices[0])
    expected_fps = min(real_fps, MAX_FED_FPS)  # slots 0.5 s apart at least: one M-RoPE time each
    assert "fps" not in round1["mm_processor_kwargs"]  # transformers 5 refuses it as a kwarg
    timing = round1["media_io_kwargs"]["video"]  # what vLLM's video/jpeg loader reads
    assert timing == {
        "fps": pytest.approx(expected_fps),
        "total_num_frames": 16,
        "frames_indices": list(range(16)),
        "num_frames": 16,
    }
    roles = [m["role"] for m in round2["messages"]]
    assert roles == ["system", "user", "assistant", "user"]  # round 2 continues round 1
    assert round2["messages"][2]["content"] == ROUND1
    (image,) = _parts(round2["messages"][3], "image_url")
    (keyframe,) = _decode(image["image_url"]["url"])
    assert keyframe.width % 28 == 0 and keyframe.height % 28 == 0

    step = next(s for s in state["steps"] if s["node"] == "spatial_grounding")
    assert step["model_image_sizes"] == [[keyframe.height, keyframe.width]]
    assert step["completion_ids"] == [] and step["logprobs"] == [-0.5] * 5


def test_sampling_settings_reach_the_server(server: FakeChatServer, demo_clip: Path) -> None:
    from revseg_agent.graphs.chats import round1_messages  # the graph's own round-1 chat

    policy = ServedPolicy(server.url, "my-model")
    frames = [np.full((120, 160, 3), v, np.uint8) for v in (0, 255)]
    from revseg_agent.policies.base import VideoFrames

    clip = VideoFrames(frames=frames, frame_indices=[0, 12], fps=24.0, total_num_frames=13)
    sampling = SamplingParams(do_sample=True, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=33, seed=5)
    messages = round1_messages("the red square", [0.0, 0.5])
    gens = policy.generate(messages, {"frames": clip}, sampling=sampling, n=3)
    assert [g.text for g in gens] == [ROUND1] * 3
    (body,) = server.requests
    assert body["model"] == "my-model" and body["n"] == 3 and body["max_tokens"] == 33
    assert (body["temperature"], body["top_p"], body["top_k"], body["seed"]) == (0.7, 0.9, 20, 5)


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        # greedy: nothing left to the checkpoint's generation config (top_k 1, penalty 1.05)
        (SamplingParams(), {"temperature": 0.0, "top_p": 1.0, "top_k": -1}),
        (SamplingParams(do_sample=True, temperature=1.0), {"temperature": 1.0, "top_p": 1.0, "top_k": -1}),
    ],
)
def test_every_sampling_field_is_sent(
    server: FakeChatServer, sampling: SamplingParams, expected: dict[str, float]
) -> None:
    from revseg_agent.policies.base import ChatMessage, TextPart

    ServedPolicy(server.url, "m").generate(
        [ChatMessage(role="user", content=[TextPart(text="hi")])], {}, sampling=sampling
    )
    (body,) = server.requests
    neutral = {"min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert {k: body[k] for k in [*expected, *neutral]} == {**expected, **neutral}


def test_served_and_local_timing_agree(tiny_policy_dir: Path, server: FakeChatServer) -> None:
    """The fps the server is told is the one the local processor derives for the same clip."""
    from revseg_agent.graphs.chats import round1_messages
    from revseg_agent.policies.base import VideoFrames
    from revseg_agent.policies.qwen import QwenVLPolicy

    frames = [np.full((120, 160, 3), v, np.uint8) for v in range(0, 160, 10)]
    clip = VideoFrames(
        frames=frames, frame_indices=list(range(0, 1600, 100)), fps=30.0, total_num_frames=1600
    )
    messages = round1_messages("q", [i / 3 for i in range(16)])
    local = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu").prepare_inputs(
        messages, {"frames": clip}
    )
    ServedPolicy(server.url, "m").generate(messages, {"frames": clip})
    served_fps = server.requests[0]["media_io_kwargs"]["video"]["fps"]
    # transformers: second_per_grid_t = temporal_patch_size / sampled fps
    assert local["second_per_grid_ts"].tolist() == [pytest.approx(2 / served_fps)]
    assert 2 / served_fps == pytest.approx(100 / 30)  # one slot per sampled frame: its real interval


def _placeholders(image_tokens: int, video_tokens: int) -> Callable[[dict[str, Any]], list[int]]:
    from revseg_agent.policies.served import IMAGE_PAD_ID, VIDEO_PAD_ID

    return lambda body: [1, 2] + [VIDEO_PAD_ID] * video_tokens + [IMAGE_PAD_ID] * image_tokens + [3]


def test_a_server_that_resized_the_visuals_is_an_error(demo_clip: Path) -> None:
    from revseg_agent.graphs.chats import KEYFRAME_REF
    from revseg_agent.policies.base import ChatMessage, ImageFrame, TextPart, VisualPart

    key = np.zeros((280, 560, 3), np.uint8)  # multiples of 28: sent as is, 10 x 20 tokens
    messages = [
        ChatMessage(role="user", content=[VisualPart(type="image", ref=KEYFRAME_REF), TextPart(text="x")])
    ]
    for tokens, ok in ((200, True), (50, False)):  # 50: the server shrank it (smaller max_pixels)
        fake = FakeChatServer(_answer, prompt_ids=_placeholders(tokens, 0))
        try:
            policy = ServedPolicy(fake.url, "m")
            if ok:
                (gen,) = policy.generate(messages, {KEYFRAME_REF: ImageFrame(key)})
                assert gen.prompt_ids.count(151655) == 200  # prompt ids are kept when returned
                assert fake.requests[0]["mm_processor_kwargs"] == {
                    "min_pixels": 280 * 560,
                    "max_pixels": 280 * 560,
                }
            else:
                with pytest.raises(ServedPolicyError, match="mis-scaled"):
                    policy.generate(messages, {KEYFRAME_REF: ImageFrame(key)})
        finally:
            fake.close()


def test_server_errors_are_clear(demo_clip: Path) -> None:
    failing = FakeChatServer(_answer, status=503)
    try:
        policy = ServedPolicy(failing.url)
        with pytest.raises(ServedPolicyError, match=r"503.*model overloaded"):
            build_graph().invoke(
                {"video_path": str(demo_clip), "query": "q"},
                context=Context(policy=policy, tracker=BoxTracker(), num_frames=4),
            )
    finally:
        failing.close()
    with pytest.raises(CheckpointError, match="cannot reach the policy server"):
        ServedPolicy(failing.url)  # nothing listens there any more


def test_cli_segments_with_a_served_policy(server: FakeChatServer, demo_clip: Path, tmp_path: Path) -> None:
    from revseg_agent.app.cli import main

    out = tmp_path / "out"
    code = main(
        ["segment", str(demo_clip), "the red square", "--out", str(out), "--tracker", "classical",
         "--policy", f"served:{server.url}#fake-qwen", "--frames", "8"]
    )  # fmt: skip
    assert code == 0
    assert (out / "masks.json").is_file() and (out / "trace.json").is_file()
    assert json.loads((out / "trace.json").read_text())["policy"] == f"fake-qwen @ {server.url}"


def test_sized_like_a_local_policy_the_server_gets_what_replay_rebuilds(
    tiny_policy_dir: Path, server: FakeChatServer
) -> None:
    """Served rollouts are replayed by a local policy: with `sizing` the visuals are sent at the
    sizes that policy gives them (the tiny checkpoint's budgets), without it at qwen-vl-utils'."""
    from revseg_agent.graphs.chats import FRAMES_REF, KEYFRAME_REF, round1_messages, round2_messages
    from revseg_agent.policies.base import ImageFrame, VideoFrames
    from revseg_agent.policies.qwen import QwenVLPolicy

    local = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    frames = [np.full((240, 320, 3), v, np.uint8) for v in range(0, 80, 10)]
    clip = VideoFrames(frames=frames, frame_indices=list(range(0, 80, 10)), fps=24.0, total_num_frames=80)
    chats = [
        (round1_messages("q", [i / 2.4 for i in range(8)]), {FRAMES_REF: clip}),
        (round2_messages("the square"), {KEYFRAME_REF: ImageFrame(frames[0])}),
    ]
    sampling = SamplingParams(max_new_tokens=4)
    for messages, visuals in chats:
        (want,) = local.generate(messages, visuals, sampling=sampling)
        (sized,) = ServedPolicy(server.url, "m", sizing=local.inputs).generate(messages, visuals)
        (plain,) = ServedPolicy(server.url, "m").generate(messages, visuals)
        assert (sized.image_sizes, sized.video_sizes) == (want.image_sizes, want.video_sizes)
        assert (plain.image_sizes, plain.video_sizes) != (want.image_sizes, want.video_sizes)


def test_a_batch_goes_out_concurrently_and_comes_back_in_order(server: FakeChatServer) -> None:
    from revseg_agent.graphs.chats import KEYFRAME_REF, round2_messages
    from revseg_agent.policies.base import ImageFrame

    sides = [(28 * h, 28 * w) for h, w in ((2, 3), (4, 2), (3, 5), (6, 1))]
    requests = [
        (round2_messages("x"), {KEYFRAME_REF: ImageFrame(np.zeros((h, w, 3), np.uint8))}) for h, w in sides
    ]
    gens = ServedPolicy(server.url, "m", max_concurrency=3).generate_batch(requests)
    assert [g.text for g in gens] == [f"bbox: [0, 0, {w}, {h}]" for h, w in sides]
    assert len(server.requests) == 4 and all(r["n"] == 1 for r in server.requests)
