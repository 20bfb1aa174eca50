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
from revseg_agent.policies.served import ServedPolicy, ServedPolicyError
from revseg_agent.testing import BoxTracker

ROUND1 = "<think>clearest here</think><answer>frame id: 3\nobject description: the red square</answer>"


class FakeChatServer:
    """Answers `/v1/models` and `/v1/chat/completions` like vLLM, with `reply(body)` choosing the
    texts; keeps every request body."""

    def __init__(self, reply: Callable[[dict[str, Any]], list[str]], status: int = 200) -> None:
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
                self._send(200, {"id": "x", "object": "chat.completion", "choices": choices})

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
    assert len(frames) == 8 and all(f.width % 28 == 0 and f.height % 28 == 0 for f in frames)
    indices = state["sampled_indices"]
    expected_fps = state["fps"] * (len(indices) - 1) / (indices[-1] - indices[0])
    assert round1["mm_processor_kwargs"]["fps"] == [pytest.approx(expected_fps)]
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
    from revseg_agent.graphs.nodes import round1_messages  # the graph's own round-1 chat

    policy = ServedPolicy(server.url, "my-model")
    state = {"query": "the red square", "sampled_timestamps": [0.0, 0.5]}
    frames = [np.full((120, 160, 3), v, np.uint8) for v in (0, 255)]
    from revseg_agent.policies.base import VideoFrames

    clip = VideoFrames(frames=frames, frame_indices=[0, 12], fps=24.0, total_num_frames=13)
    sampling = SamplingParams(do_sample=True, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=33, seed=5)
    gens = policy.generate(round1_messages(state), {"frames": clip}, sampling=sampling, n=3)  # type: ignore[arg-type]
    assert [g.text for g in gens] == [ROUND1] * 3
    (body,) = server.requests
    assert body["model"] == "my-model" and body["n"] == 3 and body["max_tokens"] == 33
    assert (body["temperature"], body["top_p"], body["top_k"], body["seed"]) == (0.7, 0.9, 20, 5)


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
    from revseg_agent.cli import main

    out = tmp_path / "out"
    code = main(
        ["segment", str(demo_clip), "the red square", "--out", str(out), "--tracker", "classical",
         "--policy", f"served:{server.url}#fake-qwen", "--frames", "8"]
    )  # fmt: skip
    assert code == 0
    assert (out / "masks.json").is_file() and (out / "trace.json").is_file()
    assert json.loads((out / "trace.json").read_text())["policy"] == f"fake-qwen @ {server.url}"
