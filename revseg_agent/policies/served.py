"""A Qwen2.5-VL served behind an OpenAI-compatible chat endpoint (vLLM, SGLang) as a `Policy`.

Why: serving a 7B model with vLLM is the fast way to run the graph over a benchmark. Visuals are
prepared on the client the way Qwen's README does it for vLLM: qwen-vl-utils resizes images and
videos to the model's grid (sides multiples of 28) before they are sent, so the server's
processor leaves them as they are and the size the boxes are written in is known here. Videos go
as their sampled frames (`data:video/jpeg;base64,<frame>,<frame>,...`) with the sampled frame
rate in `mm_processor_kwargs`, which sets M-RoPE's temporal positions on the server.

What it cannot do: report token ids, so its traces are for inference and evaluation, not for
training replay (the trainer needs a local `QwenVLPolicy`). Log-probs are recorded when the
server returns them.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from revseg_agent.errors import CheckpointError, RevsegError
from revseg_agent.policies.base import (
    GREEDY,
    ChatMessage,
    Generation,
    ImageFrame,
    SamplingParams,
    TextPart,
    VideoFrames,
    Visual,
    visual_for,
)

logger = logging.getLogger(__name__)


class ServedPolicyError(RevsegError):
    """The server could not be reached or answered with an error."""


class ServedPolicy:
    """Calls `POST {base_url}/chat/completions` (OpenAI format) for every policy call."""

    def __init__(
        self, base_url: str, model: str | None = None, *, api_key: str = "EMPTY", timeout_s: float = 600
    ):
        import httpx

        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, headers={"Authorization": f"Bearer {api_key}"}
        )
        if model is None:
            try:
                model = self._first_model()
            except ServedPolicyError as exc:  # nothing to talk to: a bad --policy, not a failed run
                raise CheckpointError(str(exc)) from exc
        self.model = model

    @classmethod
    def from_spec(cls, spec: str) -> ServedPolicy:
        """`served:<base_url>[#<model>]`, e.g. `served:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-VL-7B-Instruct`."""
        url, _, model = spec.removeprefix("served:").partition("#")
        return cls(url, model or None)

    @property
    def name(self) -> str:
        return f"{self.model} @ {self.base_url}"

    def _first_model(self) -> str:
        models = self._request("GET", "/models").get("data") or []
        if not models:
            raise CheckpointError(f"the server at {self.base_url} serves no model")
        return str(models[0]["id"])

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ServedPolicyError(f"cannot reach the policy server at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ServedPolicyError(
                f"the policy server answered {response.status_code} to {method} {path}: {response.text[:500]}"
            )
        data: dict[str, Any] = response.json()
        return data

    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = GREEDY,
        n: int = 1,
    ) -> list[Generation]:
        chat, image_sizes, video_sizes, fps = _openai_messages(messages, visuals)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat,
            "n": n,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature if sampling.do_sample else 0.0,
            "top_p": sampling.top_p if sampling.do_sample else 1.0,
            "logprobs": True,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.do_sample and sampling.top_k is not None:
            body["top_k"] = sampling.top_k  # vLLM / SGLang extension
        if fps:
            body["mm_processor_kwargs"] = {"fps": fps}
        data = self._request("POST", "/chat/completions", body)
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise ServedPolicyError(f"asked the server for {n} completions, got {len(choices)}")
        out = []
        for choice in choices:
            content = (choice.get("logprobs") or {}).get("content") or []
            out.append(
                Generation(
                    text=choice["message"].get("content") or "",
                    prompt_ids=[],
                    completion_ids=[],
                    logprobs=[float(t["logprob"]) for t in content],
                    image_sizes=image_sizes,
                    video_sizes=video_sizes,
                )
            )
        return out


def _openai_messages(
    messages: Sequence[ChatMessage], visuals: Mapping[str, Visual]
) -> tuple[list[dict[str, Any]], list[tuple[int, int]], list[tuple[int, int]], list[float]]:
    """OpenAI-format messages, the model-side size of each image and video, and each video's
    sampled frame rate (in message order)."""
    import torch
    from qwen_vl_utils import process_vision_info

    chat: list[dict[str, Any]] = []
    image_sizes: list[tuple[int, int]] = []
    video_sizes: list[tuple[int, int]] = []
    fps: list[float] = []
    for message in messages:
        if all(isinstance(p, TextPart) for p in message.content):
            chat.append({"role": message.role, "content": "".join(p.text for p in message.content)})  # type: ignore[union-attr]
            continue
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
                continue
            visual = visual_for(part, visuals)
            if isinstance(visual, ImageFrame):
                images, _ = process_vision_info([[{"role": "user", "content": [_element(visual)]}]])
                image = images[0]
                image_sizes.append((image.height, image.width))
                parts.append(
                    {"type": "image_url", "image_url": {"url": _data_url([np.asarray(image)], "image")}}
                )
            else:
                _, videos = process_vision_info([[{"role": "user", "content": [_element(visual)]}]])
                frames = videos[0].permute(0, 2, 3, 1).clamp(0, 255).round().to(dtype=torch.uint8).numpy()
                video_sizes.append((int(frames.shape[1]), int(frames.shape[2])))
                fps.append(sampled_fps(visual))
                url = _data_url(list(frames), "video")
                parts.append({"type": "video_url", "video_url": {"url": url}})
        chat.append({"role": message.role, "content": parts})
    return chat, image_sizes, video_sizes, fps


def sampled_fps(clip: VideoFrames) -> float:
    """Frames per second of the sampled frames (what the model's temporal positions follow)."""
    indices = list(clip.frame_indices)
    if len(indices) < 2 or indices[-1] == indices[0]:
        return float(clip.fps)
    step = (indices[-1] - indices[0]) / (len(indices) - 1)
    return float(clip.fps) / step


def _element(visual: Visual) -> dict[str, Any]:
    if isinstance(visual, ImageFrame):
        return {"type": "image", "image": Image.fromarray(visual.pixels)}
    return {"type": "video", "video": [Image.fromarray(f) for f in visual.frames]}


def _data_url(frames: list[np.ndarray], kind: str) -> str:
    """An image as lossless PNG; a video as its JPEG frames, comma-separated (vLLM's `video/jpeg`)."""
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        if kind == "image":
            Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG")
        else:
            Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="JPEG", quality=95)
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    mime = "image/png" if kind == "image" else "video/jpeg"
    return f"data:{mime};base64,{','.join(encoded)}"
