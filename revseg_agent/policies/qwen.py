"""Qwen2.5-VL as a `Policy`, on transformers.

Visual inputs are prepared the way Qwen's own code prepares them (qwen-vl-utils: pixel budgets,
resizing to multiples of 28), and the round-1 frames reach the processor with their real temporal
metadata (`video_metadata`: fps, total frame count, original indices), so M-RoPE's temporal
positions match the video's time axis instead of an assumed 24 fps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from revseg_agent.errors import CheckpointError
from revseg_agent.policies.base import (
    GREEDY,
    ChatMessage,
    Generation,
    ImageFrame,
    SamplingParams,
    TextPart,
    VideoFrames,
    Visual,
    VisualPart,
)

logger = logging.getLogger(__name__)

DEFAULT_POLICY = "Qwen/Qwen2.5-VL-7B-Instruct"
#: Qwen2.5-VL's patch size times its spatial merge size: resized sides are multiples of this.
PATCH_SIZE = 14
FRAME_FACTOR = 2  # temporal patch size: videos are padded to an even number of frames


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (as Qwen2.5-VL is released), fp32 on the CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


class QwenVLPolicy:
    """A Qwen2.5-VL checkpoint (hub id or local folder) answering the graph's prompts."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str,
        image_max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        video_total_pixels: int | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self._name = name
        self.image_max_pixels = image_max_pixels
        self.video_max_pixels = video_max_pixels
        self.video_total_pixels = video_total_pixels

    @property
    def name(self) -> str:
        return self._name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_POLICY,
        *,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        image_max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        video_total_pixels: int | None = None,
        revision: str | None = None,
    ) -> QwenVLPolicy:
        """Load a Qwen2.5-VL checkpoint and its processor.

        `name_or_path` is anything `from_pretrained` takes: a hub id such as
        `Qwen/Qwen2.5-VL-7B-Instruct` or a local folder (e.g. a fine-tuned checkpoint).
        `attn_implementation` is passed through (`"sdpa"`, `"flash_attention_2"`, `"eager"`).
        Pixel budgets default to the processor's own limits.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        name = str(name_or_path)
        if _looks_local(name) and not Path(name).expanduser().is_dir():
            raise CheckpointError(f"policy checkpoint folder does not exist: {name}")
        device = device or default_device()
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or default_dtype(device)
        kwargs: dict[str, Any] = {"dtype": dtype, "revision": revision}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
            processor = AutoProcessor.from_pretrained(name, revision=revision)
        except (OSError, ValueError, RuntimeError) as exc:  # missing files, bad config, shape mismatch
            raise CheckpointError(f"cannot load policy {name!r}: {exc}") from exc
        if getattr(model.config, "model_type", None) not in {"qwen2_5_vl", "qwen2_vl"}:
            raise CheckpointError(
                f"{name!r} is a {model.config.model_type!r} model; QwenVLPolicy needs Qwen2.5-VL"
            )
        model = model.to(device).eval()  # type: ignore[arg-type]  # transformers types `.to` oddly
        logger.info("loaded policy %s on %s (%s)", name, device, dtype)
        return cls(
            model,
            processor,
            name=name,
            image_max_pixels=image_max_pixels,
            video_max_pixels=video_max_pixels,
            video_total_pixels=video_total_pixels,
        )

    # -- input preparation ---------------------------------------------------------------------
    def _budget(self, which: str) -> tuple[int, int]:
        """`(min_pixels, max_pixels)` of the processor's image or video processor."""
        proc = getattr(self.processor, f"{which}_processor")
        size = proc.size
        lo = size.get("shortest_edge") if hasattr(size, "get") else size.shortest_edge
        hi = size.get("longest_edge") if hasattr(size, "get") else size.longest_edge
        return int(lo), int(hi)

    def _qwen_messages(
        self, messages: Sequence[ChatMessage], visuals: Mapping[str, Visual]
    ) -> tuple[list[dict[str, Any]], list[VideoFrames]]:
        out: list[dict[str, Any]] = []
        videos: list[VideoFrames] = []
        img_lo, img_hi = self._budget("image")
        vid_lo, vid_hi = self._budget("video")
        for msg in messages:
            content: list[dict[str, Any]] = []
            for part in msg.content:
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                    continue
                visual = visuals.get(part.ref)
                if visual is None:
                    raise KeyError(f"message refers to visual {part.ref!r}, which was not given")
                if part.type == "image":
                    if not isinstance(visual, ImageFrame):
                        raise TypeError(f"visual {part.ref!r} is used as an image but is a video")
                    content.append(
                        {
                            "type": "image",
                            "image": Image.fromarray(visual.pixels),
                            "min_pixels": img_lo,
                            "max_pixels": min(img_hi, self.image_max_pixels or img_hi),
                        }
                    )
                else:
                    if not isinstance(visual, VideoFrames):
                        raise TypeError(f"visual {part.ref!r} is used as a video but is an image")
                    element: dict[str, Any] = {
                        "type": "video",
                        "video": [Image.fromarray(f) for f in visual.frames],
                        "min_pixels": vid_lo,
                        "max_pixels": min(vid_hi, self.video_max_pixels or vid_hi),
                    }
                    if self.video_total_pixels:
                        element["total_pixels"] = self.video_total_pixels
                    content.append(element)
                    videos.append(visual)
            out.append({"role": msg.role, "content": content})
        return out, videos

    def prepare_inputs(
        self, messages: Sequence[ChatMessage], visuals: Mapping[str, Visual]
    ) -> dict[str, Any]:
        """Tokenise a chat with its visuals into model inputs (also used by training replay)."""
        return self.prepare_batch([(messages, visuals)])

    def prepare_batch(self, requests: Sequence[Request]) -> dict[str, Any]:
        """Tokenise several chats into one left-padded batch (images and videos in order)."""
        from qwen_vl_utils import process_vision_info

        conversations = []
        clips: list[VideoFrames] = []
        for messages, visuals in requests:
            qmsgs, videos = self._qwen_messages(messages, visuals)
            conversations.append(qmsgs)
            clips += videos
        images, video_inputs, _ = process_vision_info(
            conversations, return_video_kwargs=True, return_video_metadata=True
        )
        kwargs: dict[str, Any] = {"return_tensors": "pt", "padding": True, "padding_side": "left"}
        kwargs["text"] = [
            self.processor.apply_chat_template(q, tokenize=False, add_generation_prompt=True)
            for q in conversations
        ]
        if images:
            kwargs["images"] = images
        if video_inputs:
            tensors = [v for v, _ in video_inputs]
            metadata = []
            for tensor, clip in zip(tensors, clips, strict=True):
                indices = list(clip.frame_indices)
                # qwen-vl-utils pads to an even count by repeating the last frame; mirror it.
                indices += [indices[-1]] * (int(tensor.shape[0]) - len(indices))
                metadata.append(
                    {
                        "fps": float(clip.fps),
                        "total_num_frames": int(clip.total_num_frames),
                        "frames_indices": indices,
                    }
                )
            kwargs.update(videos=tensors, video_metadata=metadata, do_sample_frames=False)
        return dict(self.processor(**kwargs))

    @staticmethod
    def model_sizes(grid: torch.Tensor | None) -> list[tuple[int, int]]:
        """`(height, width)` each image or video was resized to, from the processor's patch grid."""
        if grid is None:
            return []
        return [(int(h) * PATCH_SIZE, int(w) * PATCH_SIZE) for _, h, w in grid.tolist()]

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = GREEDY,
        n: int = 1,
    ) -> list[Generation]:
        """`n` completions of one chat, sampled in one batched call."""
        return self._generate([(messages, visuals)], sampling, n)

    def generate_batch(
        self, requests: Sequence[Request], *, sampling: SamplingParams = GREEDY
    ) -> list[Generation]:
        """One completion for each of several chats, in one left-padded batched call."""
        return self._generate(requests, sampling, 1)

    @torch.inference_mode()
    def _generate(self, requests: Sequence[Request], sampling: SamplingParams, n: int) -> list[Generation]:
        inputs = self.prepare_batch(requests)
        image_sizes = self.model_sizes(inputs.get("image_grid_thw"))
        video_sizes = self.model_sizes(inputs.get("video_grid_thw"))
        device = self.device
        model_inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        tokenizer = self.processor.tokenizer
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "do_sample": sampling.do_sample,
            "num_return_sequences": n,
            "return_dict_in_generate": True,
            "output_logits": True,
            "pad_token_id": tokenizer.pad_token_id,
            # A completion must never contain vision placeholders: replaying it would misalign
            # the visual features (only a random-init model would ever sample them).
            "suppress_tokens": self._vision_token_ids(),
        }
        if sampling.do_sample:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        else:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.model.generate(**model_inputs, **gen_kwargs)
        prompt_len = int(model_inputs["input_ids"].shape[1])
        sequences = out.sequences[:, prompt_len:]
        temperature = sampling.temperature if sampling.do_sample else 1.0
        logits = torch.stack(out.logits, dim=1).float() / temperature  # (rows, T, V)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, sequences.unsqueeze(-1)).squeeze(-1)
        eos_ids = self._eos_ids()
        per_request_images = [_count(m, "image") for m, _ in requests]
        per_request_videos = [_count(m, "video") for m, _ in requests]
        results = []
        for row in range(sequences.shape[0]):
            request = row // n
            mask = model_inputs["attention_mask"][request].bool()
            prompt_ids = model_inputs["input_ids"][request][mask].tolist()  # left padding removed
            ids = sequences[row].tolist()
            end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), len(ids))
            completion = ids[:end]
            first_image = sum(per_request_images[:request])
            first_video = sum(per_request_videos[:request])
            results.append(
                Generation(
                    text=tokenizer.decode(completion, skip_special_tokens=True),
                    prompt_ids=prompt_ids,
                    completion_ids=completion,
                    logprobs=[float(x) for x in logprobs[row, :end].tolist()],
                    image_sizes=image_sizes[first_image : first_image + per_request_images[request]],
                    video_sizes=video_sizes[first_video : first_video + per_request_videos[request]],
                )
            )
        return results

    def _vision_token_ids(self) -> list[int]:
        tokens = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
        ids = [self.processor.tokenizer.convert_tokens_to_ids(t) for t in tokens]
        unk = self.processor.tokenizer.unk_token_id
        return [int(i) for i in ids if i is not None and i != unk]

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        ids.add(int(self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")))
        return {int(i) for i in ids if i is not None}


Request = tuple[Sequence[ChatMessage], Mapping[str, Visual]]


def _count(messages: Sequence[ChatMessage], kind: str) -> int:
    return sum(1 for m in messages for p in m.content if isinstance(p, VisualPart) and p.type == kind)
