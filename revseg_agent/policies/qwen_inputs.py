"""Qwen-VL token rows from chats (batches of rows: `qwen_batches`), for either family.

Two jobs:
- Tokenise a chat with its visuals the way Qwen's own code does (qwen-vl-utils pixel budgets, the
  processor's chat template and placeholder expansion, the real video timing as `video_metadata`).
- Token-in/token-out: an assistant message that carries the `token_ids` the policy sampled is
  spliced in as those ids, not re-tokenised from its text (a sampled completion need not
  re-tokenise to the same ids). So round 2's prompt holds round 1's prompt and completion ids
  verbatim, and training replays exactly what was sampled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from revseg_agent.policies.base import (
    ChatMessage,
    ImageFrame,
    TextPart,
    VideoFrames,
    Visual,
    visual_for,
)
from revseg_agent.policies.families import ModelFamily, family_of_processor
from revseg_agent.policies.frame_layout import (
    DEFAULT_FRAME_LAYOUT,
    DEFAULT_FRAME_TIMING,
    TEMPORAL_PATCH_SIZE,
    FrameLayout,
    FrameTiming,
    check_layout,
    check_timing,
    model_frames,
)
from revseg_agent.policies.qwen_batches import collate
from revseg_agent.policies.token_rows import IMAGE, TEXT, TokenRow, VisualBlock

Request = tuple[Sequence[ChatMessage], Mapping[str, Visual]]
_PLACEHOLDERS = {"image": "<|image_pad|>", "video": "<|video_pad|>"}
_SENTINEL = "\x00revseg-completion-{}\x00"


def visuals_fingerprint(visuals: Sequence[Visual]) -> str:
    """Identity of visuals by their pixels (what a cache may key on)."""
    digest = hashlib.sha1(usedforsecurity=False)
    for visual in visuals:
        frames = [visual.pixels] if isinstance(visual, ImageFrame) else list(visual.frames)
        digest.update(b"image" if isinstance(visual, ImageFrame) else b"video")
        for frame in frames:
            digest.update(str(frame.shape).encode())
            digest.update(np.ascontiguousarray(frame).data)
    return digest.hexdigest()


class QwenInputBuilder:
    """Builds token rows and model-input batches for one Qwen-VL processor."""

    def __init__(
        self,
        processor: Any,
        *,
        image_max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        video_total_pixels: int | None = None,
        frame_layout: FrameLayout = DEFAULT_FRAME_LAYOUT,
        frame_timing: FrameTiming = DEFAULT_FRAME_TIMING,
        family: ModelFamily | None = None,
    ) -> None:
        self.processor = processor
        #: The model family the processor belongs to (patch size, how video time is fed).
        self.family = family or family_of_processor(processor)
        self.image_max_pixels = image_max_pixels
        self.video_max_pixels = video_max_pixels
        self.video_total_pixels = video_total_pixels
        self.frame_layout = check_layout(frame_layout)
        #: How the fed rate is derived (`frame_layout.FrameTiming`): the checkpoint's own.
        self.frame_timing = check_timing(frame_timing)
        self.temporal_patch_size = int(
            getattr(processor.video_processor, "temporal_patch_size", None) or TEMPORAL_PATCH_SIZE
        )

    # -- chat -> rows ---------------------------------------------------------------------------
    def rows(self, requests: Sequence[Request]) -> list[TokenRow]:
        """One token row per chat. Identical segments (e.g. the same round-1 prompt with its
        video in every round-2 chat of a group) are processed once."""
        memo: dict[tuple[str, str], TokenRow] = {}
        return [self._row(messages, visuals, memo) for messages, visuals in requests]

    def _row(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        memo: dict[tuple[str, str], TokenRow],
    ) -> TokenRow:
        spliced = [m.token_ids for m in messages if m.role == "assistant" and m.token_ids is not None]
        elements, clips = self.visual_elements(messages, visuals)
        conversation = self.processor_conversation(messages, elements)
        if not spliced:
            text = self.processor.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
            return self._segment(text, elements, clips, memo)
        # Render with a sentinel for each spliced completion, process the text between them, and
        # put the sampled ids where the completions were.
        k = 0
        for i, message in enumerate(messages):
            if message.role == "assistant" and message.token_ids is not None:
                conversation[i] = {
                    "role": "assistant",
                    "content": [{"type": "text", "text": _SENTINEL.format(k)}],
                }
                k += 1
        text = self._render(conversation)
        pieces: list[str] = []
        rest = text
        for j in range(k):
            before, found, rest = rest.partition(_SENTINEL.format(j))
            if not found:
                raise ValueError("the chat template dropped an assistant message; cannot splice its ids")
            pieces.append(before)
        pieces.append(rest)
        row = TokenRow.text([])
        im_end = self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        used = {"image": 0, "video": 0}
        for j, piece in enumerate(pieces):
            counts = {kind: piece.count(tag) for kind, tag in _PLACEHOLDERS.items()}
            mine = [
                (e, c)
                for kind in ("image", "video")
                for e, c in list(zip(elements[kind], clips[kind], strict=True))[
                    used[kind] : used[kind] + counts[kind]
                ]
            ]
            for kind in used:
                used[kind] += counts[kind]
            seg = self._segment(
                piece,
                {kind: [e for e, _ in mine if e["type"] == kind] for kind in ("image", "video")},
                {kind: [c for e, c in mine if e["type"] == kind] for kind in ("image", "video")},
                memo,
            )
            if j > 0 and row.input_ids and row.input_ids[-1] == im_end and seg.input_ids[:1] == [im_end]:
                # the sampled completion ended with <|im_end|>; the template's own one is dropped
                seg = TokenRow(seg.input_ids[1:], seg.mm_token_type_ids[1:], _shift(seg.blocks, -1))
            row = row + seg
            if j < k:
                row = row + TokenRow.text(spliced[j])
        return row

    def _render(self, conversation: list[dict[str, Any]]) -> str:
        return str(
            self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        )

    def visual_elements(
        self, messages: Sequence[ChatMessage], visuals: Mapping[str, Visual]
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[Visual]]]:
        """qwen-vl-utils elements for every visual of a chat, by kind and in order, and the
        visuals as fed (clips laid out by `frame_layout`)."""
        elements: dict[str, list[dict[str, Any]]] = {"image": [], "video": []}
        clips: dict[str, list[Visual]] = {"image": [], "video": []}
        for msg in messages:
            for part in msg.content:
                if isinstance(part, TextPart):
                    continue
                element, fed = self.visual_element(visual_for(part, visuals))
                elements[part.type].append(element)
                clips[part.type].append(fed)
        return elements, clips

    def visual_element(self, visual: Visual) -> tuple[dict[str, Any], Visual]:
        """The qwen-vl-utils element for one visual with this processor's pixel budget, and the
        visual as fed (a clip laid out by `frame_layout`). The served policy sizes what it sends
        with this too when it must match a local policy (training replays served rollouts)."""
        if isinstance(visual, ImageFrame):
            lo, hi = self.budget("image")
            element: dict[str, Any] = {
                "type": "image",
                "image": Image.fromarray(visual.pixels),
                "min_pixels": lo,
                "max_pixels": min(hi, self.image_max_pixels or hi),
            }
            return element, visual
        fed = model_frames(visual, self.frame_layout, self.temporal_patch_size, self.frame_timing)
        element = {
            "type": "video",
            "video": [Image.fromarray(f) for f in fed.frames],
            **self.video_budget(len(fed.frames)),
        }
        return element, fed

    @staticmethod
    def processor_conversation(
        messages: Sequence[ChatMessage], elements: Mapping[str, list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """The chat in the processor's format (`visual_elements` in place, in order): what
        `apply_chat_template` and qwen-vl-utils take, e.g. to build a reference batch."""
        next_of = {kind: iter(items) for kind, items in elements.items()}
        out = []
        for msg in messages:
            content: list[dict[str, Any]] = []
            for part in msg.content:
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                else:
                    element = next(next_of[part.type])
                    content.append(element)
            out.append({"role": msg.role, "content": content})
        return out

    def video_budget(self, num_frames: int) -> dict[str, int]:
        """Per-frame `min_pixels`/`max_pixels` (and `total_pixels`) for qwen-vl-utils.

        The processor's video budget, capped at what qwen-vl-utils allows a frame of a video of
        `num_frames` frames (768 tokens, and the total budget shared among the frames). The
        released 7B ships no video config, so its video processor carries the image budget
        (up to 12.8 MP): passed as is, qwen-vl-utils would cap it and warn on every call."""
        from qwen_vl_utils import vision_process as vp

        lo, hi = self.budget("video")
        factor = self.family.pixels_per_token_side  # patch 14 or 16 x spatial merge 2
        total = self.video_total_pixels or vp.MODEL_SEQ_LEN * factor * factor * 0.9
        frames = -(-num_frames // vp.FRAME_FACTOR) * vp.FRAME_FACTOR  # as qwen-vl-utils pads
        limit = max(
            min(vp.VIDEO_MAX_TOKEN_NUM * factor * factor, total / frames * vp.FRAME_FACTOR), int(lo * 1.05)
        )
        budget = {"min_pixels": lo, "max_pixels": int(min(hi, self.video_max_pixels or hi, limit))}
        if self.video_total_pixels:
            budget["total_pixels"] = self.video_total_pixels
        return budget

    def set_video_pixels(self, pixels: int) -> None:
        """Resize every video frame to about `pixels` pixels, up or down (aspect kept, sides on
        the patch grid), by setting the video processor's own budget: `save_pretrained` then
        writes it, so a checkpoint trained this way sees frames this way wherever it loads."""
        from transformers.image_utils import SizeDict

        if pixels < 1:
            raise ValueError(f"video_pixels must be positive, got {pixels}")
        self.processor.video_processor.size = SizeDict(shortest_edge=pixels, longest_edge=pixels)

    def budget(self, which: str) -> tuple[int, int]:
        """`(min_pixels, max_pixels)` of the processor's image or video processor."""
        proc = getattr(self.processor, f"{which}_processor")
        size = proc.size
        lo = size.get("shortest_edge") if hasattr(size, "get") else size.shortest_edge
        hi = size.get("longest_edge") if hasattr(size, "get") else size.longest_edge
        return int(lo), int(hi)

    def _segment(
        self,
        text: str,
        elements: Mapping[str, list[dict[str, Any]]],
        clips: Mapping[str, list[Visual]],
        memo: dict[tuple[str, str], TokenRow],
    ) -> TokenRow:
        """Process one piece of rendered chat text with the visuals whose placeholders it holds."""
        key = (text, visuals_fingerprint([*clips["image"], *clips["video"]]))
        if key in memo:
            return memo[key]
        from qwen_vl_utils import process_vision_info

        visual_elements = [e for kind in ("image", "video") for e in elements[kind]]
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if visual_elements:
            images, video_inputs, _ = process_vision_info(
                [[{"role": "user", "content": visual_elements}]],
                return_video_kwargs=True,
                return_video_metadata=True,
                image_patch_size=self.family.patch_size,
            )
            if images:
                kwargs["images"] = images
            if video_inputs:
                tensors = [v for v, _ in video_inputs]
                metadata = []
                for tensor, clip in zip(tensors, clips["video"], strict=True):
                    assert isinstance(clip, VideoFrames)
                    # qwen-vl-utils may pad to an even count by repeating the last frame
                    metadata.append(self.family.video_metadata(clip, num_frames=int(tensor.shape[0])))
                kwargs.update(videos=tensors, video_metadata=metadata, do_sample_frames=False)
            if not self.family.processor_resizes:
                kwargs["do_resize"] = False  # already sized to the budgets on the family's grid
        out = self.processor(**kwargs)
        row = _row_from_processor(dict(out), runs_per_slot=self.family.frame_runs_per_slot)
        memo[key] = row
        return row

    # -- rows -> model inputs -------------------------------------------------------------------
    def collate(self, rows: Sequence[TokenRow], *, shared: int = 0, pixels_from: int = 0) -> dict[str, Any]:
        """Model inputs for `rows` (see `qwen_batches.collate`), padded with this tokenizer's id."""
        pad = int(self.processor.tokenizer.pad_token_id)
        return collate(rows, pad, shared=shared, pixels_from=pixels_from)


def _shift(blocks: Sequence[VisualBlock], by: int) -> tuple[VisualBlock, ...]:
    return tuple(replace(b, start=b.start + by) for b in blocks)


def _row_from_processor(out: dict[str, Any], *, runs_per_slot: bool = False) -> TokenRow:
    """A `TokenRow` from the processor's output for one text (visual blocks found from the
    token types: each run of image or video tokens is the next visual of that kind; with
    `runs_per_slot` (Qwen3-VL) a video is its grid's `t` runs, one per temporal slot, with the
    timestamp text between them inside the block)."""
    ids = out["input_ids"][0].tolist()
    types = out["mm_token_type_ids"][0].tolist()
    pixels = {"image": out.get("pixel_values"), "video": out.get("pixel_values_videos")}
    grids = {"image": out.get("image_grid_thw"), "video": out.get("video_grid_thw")}
    seconds = out.get("second_per_grid_ts")
    taken = {"image": 0, "video": 0}
    offset = {"image": 0, "video": 0}
    blocks = []
    i = 0
    while i < len(types):
        if types[i] == TEXT:
            i += 1
            continue
        kind: Literal["image", "video"] = "image" if types[i] == IMAGE else "video"
        grid = grids[kind][taken[kind]]  # type: ignore[index]
        runs = int(grid[0]) if kind == "video" and runs_per_slot else 1
        j = i
        for run in range(runs):
            if run:
                while j < len(types) and types[j] != types[i]:
                    j += 1
            while j < len(types) and types[j] == types[i]:
                j += 1
        patches = int(grid.prod())
        start = offset[kind]
        block_pixels = pixels[kind][start : start + patches]  # type: ignore[index]
        second = float(seconds[taken[kind]]) if kind == "video" and seconds is not None else None
        blocks.append(VisualBlock(kind, i, j - i, block_pixels, grid, second))
        taken[kind] += 1
        offset[kind] += patches
        i = j
    return TokenRow(ids, types, tuple(blocks))
