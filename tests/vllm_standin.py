"""A stand-in for `vllm serve --enable-lora` on a CPU, for the served-rollout tests.

Why a stand-in: vLLM does not start on this CPU (README, "A model behind a server") and
`transformers serve` can neither take a video's frames, sample with top-k, return log-probs nor
load adapters. What is real here: a separate server process on loopback; vLLM 0.32's wire
protocol as read from its source (`/v1/chat/completions` with `n`, `seed`, `logprobs` and
`return_token_ids`, answering `prompt_token_ids` and per-choice `token_ids`;
`/v1/load_lora_adapter {lora_name, lora_path, load_inplace}` and `/v1/unload_lora_adapter
{lora_name}`, present only with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`, answering plain text,
refusing a second load of a name without `load_inplace`, 404 for an unknown name or model);
adapters read from the folder the trainer wrote (PEFT format, as vLLM reads them); the same
checkpoint and its processor. What differs: the engine (transformers through `QwenVLPolicy`,
one request at a time) and the visuals' way in: the received frames (already sized by the
client) go through qwen-vl-utils with the checkpoint's budgets and the `paired` layout (the
client already laid them out) where vLLM runs the processor on them directly. Log-probs are of
the sampled (temperature-scaled) distribution, as vLLM's `--logprobs-mode processed_logprobs`.

Run: `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True python -m tests.vllm_standin CHECKPOINT --port P`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request  # FastAPI reads the handlers' annotations: module level
from fastapi.responses import JSONResponse, PlainTextResponse
from PIL import Image

from revseg_agent.policies.base import (
    ChatMessage,
    ImageFrame,
    SamplingParams,
    TextPart,
    VideoFrames,
    Visual,
    VisualPart,
)
from revseg_agent.policies.qwen import QwenVLPolicy


def _decode(url: str) -> list[np.ndarray]:
    """The frames of a `data:image/...;base64,X` or `data:video/jpeg;base64,X,Y,...` URL."""
    header, _, payload = url.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ValueError(f"only base64 data URLs are served here, got {header[:40]!r}")
    frames = [Image.open(io.BytesIO(base64.b64decode(p))).convert("RGB") for p in payload.split(",")]
    return [np.asarray(f) for f in frames]


def _jpeg_sequence_checks(frames: list[np.ndarray], timing: dict[str, Any]) -> list[np.ndarray]:
    """What vLLM's `video/jpeg` loader does with `media_io_kwargs.video` before the processor
    sees the frames (`vllm/multimodal/media/video.py` `VideoMediaIO.load_base64`): keep the first
    `num_frames` (default 32), then refuse `frames_indices` that are not ints one per frame kept
    and a `total_num_frames` below the frames kept."""
    num_frames = int(timing.get("num_frames", 32))
    if num_frames > 0:
        frames = frames[:num_frames]
    indices = timing.get("frames_indices")
    if indices is not None:
        if not (isinstance(indices, list) and all(isinstance(i, int) for i in indices)):
            raise ValueError("frames_indices must be a list of integers")
        if len(indices) != len(frames):
            raise ValueError(
                f"frames_indices length ({len(indices)}) must match number of frames sent ({len(frames)})"
            )
    total = timing.get("total_num_frames", len(frames))
    if not isinstance(total, int) or total < len(frames):
        raise ValueError(f"total_num_frames ({total}) must be >= number of frames sent ({len(frames)})")
    return frames


def chat_from_openai(body: dict[str, Any]) -> tuple[list[ChatMessage], dict[str, Visual]]:
    """The request's messages as the library's chat, each visual under its own reference."""
    timing = (body.get("media_io_kwargs") or {}).get("video") or {}
    messages: list[ChatMessage] = []
    visuals: dict[str, Visual] = {}
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            messages.append(ChatMessage(role=message["role"], content=[TextPart(text=content)]))
            continue
        parts: list[TextPart | VisualPart] = []
        for part in content:
            ref = f"v{len(visuals)}"
            if part["type"] == "text":
                parts.append(TextPart(text=part["text"]))
            elif part["type"] == "image_url":
                visuals[ref] = ImageFrame(_decode(part["image_url"]["url"])[0])
                parts.append(VisualPart(type="image", ref=ref))
            elif part["type"] == "video_url":
                frames = _jpeg_sequence_checks(_decode(part["video_url"]["url"]), timing)
                visuals[ref] = VideoFrames(
                    frames=frames,
                    frame_indices=list(timing.get("frames_indices") or range(len(frames))),
                    fps=float(timing.get("fps") or 2.0),
                    total_num_frames=int(timing.get("total_num_frames") or len(frames)),
                )
                parts.append(VisualPart(type="video", ref=ref))
            else:
                raise ValueError(f"unsupported content part {part['type']!r}")
        messages.append(ChatMessage(role=message["role"], content=parts))
    return messages, visuals


def sampling_from_openai(body: dict[str, Any]) -> SamplingParams:
    """vLLM's reading of the request's sampling fields (temperature 0: greedy); fields this
    stand-in does not implement must be neutral."""
    for key, neutral in (("repetition_penalty", 1.0), ("presence_penalty", 0.0), ("frequency_penalty", 0.0)):
        if float(body.get(key, neutral)) != neutral:
            raise ValueError(f"{key} is not implemented by the stand-in")
    temperature = float(body.get("temperature", 1.0))
    top_k = int(body.get("top_k", -1))
    return SamplingParams(
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_p=float(body.get("top_p", 1.0)),
        top_k=None if top_k <= 0 else top_k,
        max_new_tokens=int(body.get("max_tokens") or 512),
        seed=body.get("seed"),
    )


class Engine:
    """The checkpoint, its LoRA adapters by name, and one request at a time."""

    def __init__(self, checkpoint: str, served_name: str) -> None:
        self.policy = QwenVLPolicy.from_pretrained(
            checkpoint, device="cpu", dtype="float32", frame_layout="paired"
        )
        self.base = self.policy.model
        self.served_name = served_name
        self.adapters: dict[str, str] = {}  # name -> path
        self.peft: Any = None
        self.lock = threading.Lock()
        #: Each processed video's `second_per_grid_ts`, in request order (see `process_videos`).
        self.second_per_grid_ts: list[list[float]] = []
        #: Each processed video's `<t seconds>` (Qwen3-VL), in request order.
        self.video_timestamps: list[list[float]] = []

    def load(self, name: str, path: str) -> None:
        from peft import PeftModel

        with self.lock:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, path, adapter_name=name)
            else:
                if name in self.adapters:
                    self.peft.delete_adapter(name)
                self.peft.load_adapter(path, adapter_name=name)
            self.peft.eval()
            self.adapters[name] = path

    def unload(self, name: str) -> None:
        with self.lock:
            del self.adapters[name]
            if self.peft is not None and len(self.peft.peft_config) > 1:
                if self.peft.active_adapter == name:
                    self.peft.set_adapter(next(n for n in self.peft.peft_config if n != name))
                self.peft.delete_adapter(name)

    @contextlib.contextmanager
    def _pixel_budget(self, kwargs: dict[str, Any]) -> Iterator[None]:
        """`mm_processor_kwargs` min/max pixels override the processor's budget for one request,
        as vLLM passes them to the HF processor (the client pins them to the sizes it sent)."""
        processors = [self.policy.processor.image_processor, self.policy.processor.video_processor]
        saved = [p.size for p in processors]
        if "min_pixels" in kwargs and "max_pixels" in kwargs:
            from transformers.image_utils import SizeDict

            lo, hi = int(kwargs["min_pixels"]), int(kwargs["max_pixels"])
            for p in processors:
                p.size = SizeDict(shortest_edge=lo, longest_edge=hi)
        try:
            yield
        finally:
            for p, size in zip(processors, saved, strict=True):
                p.size = size

    def process_videos(self, body: dict[str, Any], visuals: dict[str, Visual]) -> None:
        """What vLLM does with a request's video before the model runs: the checkpoint's HF
        processor called with the request's `mm_processor_kwargs` as keyword arguments and the
        metadata its `video/jpeg` loader derived from `media_io_kwargs.video` as `video_metadata`
        (`InputProcessingContext.call_hf_processor`; frames are not sampled again). A kwarg the
        processor refuses fails the request (400), as it does in vLLM. Each video's
        `second_per_grid_ts` (Qwen2.5-VL) and the `<t seconds>` its prompt got (Qwen3-VL) are kept
        for the tests (`GET /standin/second_per_grid_ts`, `GET /standin/video_timestamps`)."""
        from huggingface_hub.errors import StrictDataclassError

        kwargs = body.get("mm_processor_kwargs") or {}
        for visual in visuals.values():
            if not isinstance(visual, VideoFrames):
                continue
            frames = torch.from_numpy(np.stack(visual.frames)).permute(0, 3, 1, 2)
            # the clip `chat_from_openai` built from `media_io_kwargs.video`: the loader's metadata
            metadata = {
                "fps": float(visual.fps),
                "total_num_frames": int(visual.total_num_frames),
                "frames_indices": list(visual.frame_indices),
            }
            try:
                out = self.policy.processor(
                    text=["<|vision_start|><|video_pad|><|vision_end|>"],
                    videos=[frames],
                    video_metadata=[metadata],
                    do_sample_frames=False,
                    return_tensors="pt",
                    **kwargs,
                )
            except (StrictDataclassError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"the HF processor refused the request: {type(exc).__name__}: {exc}"
                ) from exc
            if "second_per_grid_ts" in out:
                self.second_per_grid_ts.append([float(v) for v in out["second_per_grid_ts"].tolist()])
            text = self.policy.processor.tokenizer.decode(out["input_ids"][0])
            self.video_timestamps.append([float(t) for t in re.findall(r"<([0-9.]+) seconds>", text)])

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model") or self.served_name
        messages, visuals = chat_from_openai(body)
        self.process_videos(body, visuals)
        sampling = sampling_from_openai(body)
        n = int(body.get("n", 1))
        with self.lock, self._pixel_budget(body.get("mm_processor_kwargs") or {}):
            if model == self.served_name:
                if self.peft is not None:
                    with self.peft.disable_adapter():
                        self.policy.model = self.peft
                        gens = self.policy.generate(messages, visuals, sampling=sampling, n=n)
                else:
                    self.policy.model = self.base
                    gens = self.policy.generate(messages, visuals, sampling=sampling, n=n)
            else:
                self.peft.set_adapter(model)
                self.policy.model = self.peft
                gens = self.policy.generate(messages, visuals, sampling=sampling, n=n)
        tokenizer = self.policy.processor.tokenizer
        choices = []
        for i, gen in enumerate(gens):
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": "length" if len(gen.completion_ids) >= sampling.max_new_tokens else "stop",
            }
            if body.get("logprobs"):
                choice["logprobs"] = {
                    "content": [
                        {"token": tokenizer.decode([t]), "logprob": lp, "bytes": None, "top_logprobs": []}
                        for t, lp in zip(gen.completion_ids, gen.logprobs, strict=True)
                    ]
                }
            if body.get("return_token_ids"):
                choice["token_ids"] = gen.completion_ids
            choices.append(choice)
        reply: dict[str, Any] = {
            "id": f"chatcmpl-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
        }
        if body.get("return_token_ids"):
            reply["prompt_token_ids"] = gens[0].prompt_ids
        return reply


def build_app(engine: Engine) -> Any:
    app = FastAPI()

    def error(message: str, code: int) -> JSONResponse:
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(code, "InternalServerError")
        return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=code)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        names = [engine.served_name, *engine.adapters]
        return {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}

    @app.get("/standin/second_per_grid_ts")
    def processed() -> list[list[float]]:
        """Not vLLM's: what the processor derived for each video so far (a test hook)."""
        return engine.second_per_grid_ts

    @app.get("/standin/video_timestamps")
    def timestamps() -> list[list[float]]:
        """Not vLLM's: the `<t seconds>` the processor wrote for each video so far (a test hook)."""
        return engine.video_timestamps

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = body.get("model") or engine.served_name
        if model != engine.served_name and model not in engine.adapters:
            return error(f"The model `{model}` does not exist.", 404)
        try:
            return engine.complete(body)
        except ValueError as exc:
            return error(str(exc), 400)

    if os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "").lower() in {"1", "true"}:

        @app.post("/v1/load_lora_adapter")
        async def load(request: Request) -> Any:
            body = await request.json()
            name, path = body.get("lora_name"), body.get("lora_path")
            if not name or not path:
                return error("Both 'lora_name' and 'lora_path' must be provided.", 400)
            if name == engine.served_name:
                return error(f"The lora adapter '{name}' conflicts with a served base model.", 400)
            if name in engine.adapters and not body.get("load_inplace", False):
                return error(
                    f"The lora adapter '{name}' has already been loaded. If you want to load the "
                    "adapter in place, set 'load_inplace' to True.",
                    400,
                )
            if not (Path(path) / "adapter_config.json").is_file():
                return error(f"Loading lora {name} failed: No adapter found for {path}", 404)
            engine.load(name, path)
            return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

        @app.post("/v1/unload_lora_adapter")
        async def unload(request: Request) -> Any:
            name = (await request.json()).get("lora_name")
            if name not in engine.adapters:
                return error(f"The lora adapter '{name}' cannot be found.", 404)
            engine.unload(name)
            return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    return app


@contextlib.contextmanager
def running(checkpoint: str | Path, log: Path, *, runtime_lora: bool = True) -> Iterator[str]:
    """Start the stand-in on a free loopback port for the duration; yields its `/v1` URL."""
    import sys

    from .conftest import free_port, server_process

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("VLLM_ALLOW_RUNTIME_LORA_UPDATING", None)
    if runtime_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    cmd = [sys.executable, "-m", "tests.vllm_standin", str(checkpoint), "--port", str(port)]
    url = f"http://127.0.0.1:{port}/v1"
    with server_process(cmd, f"{url}/models", log, cwd=Path(__file__).resolve().parents[1], env=env):
        yield url


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    engine = Engine(args.checkpoint, args.served_model_name or args.checkpoint)
    uvicorn.run(build_app(engine), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
