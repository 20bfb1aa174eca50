"""A frozen vision tower whose visual tokens are computed once per distinct image or video.

Why: on a CPU most of a supervised step at 224 x 224 frames is the vision tower's forward and
backward (measured for `revseg-tiny`, 8 videos of 8 frames, one thread: 1.9 s a step trained
whole, 0.7 s for the language model alone on cached tokens). Freezing the tower also keeps what
it learned for grounding while round 1 is taught something else. The language model receives
the cached tokens through Qwen-VL's own `mm_encoder_outputs` argument (transformers 5), so its
forward, M-RoPE positions included, is the one that runs with pixels.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from revseg_agent.policies.token_rows import TokenRow, VisualBlock

#: Model types whose visual tokens are the merger's output alone (`pooler_output`).
SUPPORTED = ("qwen2_5_vl", "qwen2_vl")


def block_key(block: VisualBlock) -> bytes:
    """A visual's identity: its kind, patch grid and the bytes of its patches."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(block.kind.encode())
    digest.update(block.grid.numpy().tobytes())
    digest.update(block.pixels.detach().contiguous().cpu().numpy().tobytes())
    return digest.digest()


class FrozenVision:
    """Visual tokens of `model`'s vision tower (and merger), frozen, cached by content.

    Construction freezes the tower (`requires_grad` off), so an optimizer built afterwards, or
    one that skips parameters without gradients, leaves it as it is. At most `capacity` visuals
    are kept (least recently used first out)."""

    def __init__(self, model: Any, *, capacity: int = 20_000) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
        inner = base.model
        if base.config.model_type not in SUPPORTED:
            raise ValueError(
                f"frozen vision supports {', '.join(SUPPORTED)}, not {base.config.model_type!r} "
                "(Qwen3-VL's deepstack features would have to be cached too)"
            )
        if "mm_encoder_outputs" not in inspect.signature(inner.forward).parameters:
            raise RuntimeError(
                f"{type(inner).__name__}.forward takes no `mm_encoder_outputs`: frozen vision "
                "needs a transformers release whose Qwen-VL models accept precomputed visual tokens"
            )
        self.inner = inner
        self.capacity = capacity
        self.cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0
        inner.visual.requires_grad_(False)

    def _tokens(self, block: VisualBlock) -> torch.Tensor:
        key = block_key(block)
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            self.cache.move_to_end(key)
            return cached
        self.misses += 1
        inner = self.inner
        device = next(inner.visual.parameters()).device
        pixels = block.pixels.to(device)
        grid = block.grid.view(1, 3).to(device)
        with torch.no_grad():
            if block.kind == "image":
                out = inner.get_image_features(pixels, grid, return_dict=True)
            else:
                out = inner.get_video_features(pixels, grid, return_dict=True)
        tokens = torch.cat(list(out.pooler_output)).detach()
        self.cache[key] = tokens
        if len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return tokens

    def encoder_outputs(self, rows: Sequence[TokenRow]) -> dict[str, Any]:
        """`mm_encoder_outputs` for the batch `collate(rows)` builds: per kind, one token tensor a
        visual, in the order `collate` concatenates their patches (row by row)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        found: dict[str, list[torch.Tensor]] = {"image": [], "video": []}
        for row in rows:
            for block in row.blocks:
                found[block.kind].append(self._tokens(block))
        return {
            # Qwen-VL concatenates `pooler_output` itself: one tensor a visual, not one tensor
            kind: BaseModelOutputWithPooling(pooler_output=tuple(tokens))  # type: ignore[arg-type]
            for kind, tokens in found.items()
            if tokens
        }

    def inputs(self, batch: dict[str, Any], rows: Sequence[TokenRow]) -> dict[str, Any]:
        """`batch` (from `collate(rows)`) without its patches, with the cached visual tokens."""
        out = {k: v for k, v in batch.items() if k not in ("pixel_values", "pixel_values_videos")}
        out["mm_encoder_outputs"] = self.encoder_outputs(rows)
        return out
