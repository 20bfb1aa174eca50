"""Qwen2.5-VL's M-RoPE positions as the released model was trained with them.

The rule (transformers 4.x, vLLM's `get_mrope_input_positions`, Qwen's own code): a visual block's
tokens get positions `start + (t * tokens_per_second * second_per_grid_t, h, w)`, and the text
after it continues at the block's *largest* position + 1. transformers 5.x (checked: 5.24)
continues at `start + max(h, w) / merge` instead, which is the same for images but not for videos
whose temporal extent outruns their spatial one (16 frames of a clip longer than about 20 s at
the default budgets): the text after such a video lands inside the video's position range
(transformers issue 45381; PRs 45400, 48669).

`use_reference_rope_index(model)` replaces `get_rope_index` on the model's Qwen2.5-VL modules (the
one place every forward, generate and replay call goes through) when a probe shows the installed
transformers disagrees with the rule, so the override retires itself once upstream is right.
"""

from __future__ import annotations

import itertools
import logging
import types
from typing import Any

import torch

logger = logging.getLogger(__name__)

_TEXT = 0
_VIDEO = 2


def reference_rope_index(
    module: Any,
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`get_rope_index` with the released rule; same signature and outputs as transformers'.

    Returns `(position_ids (3, B, L), deltas (B, 1))`; padded positions are 0."""
    merge = int(module.config.vision_config.spatial_merge_size)
    tokens_per_second = float(module.config.vision_config.tokens_per_second)
    batch, length = input_ids.shape
    device = input_ids.device
    position_ids = torch.zeros(3, batch, length, dtype=input_ids.dtype, device=device)
    grids = {
        1: iter(image_grid_thw.tolist() if image_grid_thw is not None else []),
        _VIDEO: iter(video_grid_thw.tolist() if video_grid_thw is not None else []),
    }
    seconds = iter(second_per_grid_ts.tolist() if second_per_grid_ts is not None else [])
    deltas = []
    for b in range(batch):
        keep = (
            attention_mask[b].bool()
            if attention_mask is not None
            else torch.ones(length, dtype=torch.bool, device=device)
        )
        kinds = mm_token_type_ids[b][keep].tolist()
        pieces: list[torch.Tensor] = []
        start = 0
        for kind, run in itertools.groupby(kinds):
            count = len(list(run))
            if kind == _TEXT:
                pieces.append(torch.arange(start, start + count, device=device).expand(3, -1))
                start += count
                continue
            t, h, w = next(grids[kind])
            h, w = h // merge, w // merge
            step = tokens_per_second * float(next(seconds, 1.0)) if kind == _VIDEO else 0.0
            t_index = (torch.arange(t, device=device, dtype=torch.float64) * step).long()
            block = torch.stack(
                torch.meshgrid(
                    t_index, torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
                )
            ).reshape(3, -1)
            block = block + start
            pieces.append(block)
            start = int(block.max()) + 1  # the released rule: after the block's largest position
        row = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long, device=device)
        position_ids[:, b, keep] = row.to(position_ids.dtype)
        deltas.append(start - int(keep.sum()))
    return position_ids, torch.tensor(deltas, device=device).unsqueeze(1)


def _qwen2_5_vl_modules(model: Any) -> list[Any]:
    return [m for m in model.modules() if type(m).__name__ == "Qwen2_5_VLModel"]


def upstream_is_reference(module: Any) -> bool:
    """True when the module's own `get_rope_index` follows the released rule on a probe: one
    video of 8 temporal patches on a 2x2 grid, 4 s per patch, followed by text."""
    merge = int(module.config.vision_config.spatial_merge_size)
    grid = torch.tensor([[8, 2 * merge, 2 * merge]])
    types_ = torch.tensor([[_TEXT] * 2 + [_VIDEO] * 8 * 4 + [_TEXT] * 3])
    ids = torch.zeros_like(types_)
    kwargs = {"video_grid_thw": grid, "second_per_grid_ts": torch.tensor([4.0])}
    theirs, their_delta = type(module).get_rope_index(module, ids, types_, **kwargs)
    ours, our_delta = reference_rope_index(module, ids, types_, **kwargs)
    return bool(torch.equal(theirs, ours) and torch.equal(their_delta, our_delta))


def use_reference_rope_index(model: Any) -> int:
    """Give every Qwen2.5-VL module of `model` the released M-RoPE rule where its own differs.

    Returns how many modules were changed (0 when the installed transformers is right)."""
    changed = 0
    for module in _qwen2_5_vl_modules(model):
        if "get_rope_index" in vars(module) or upstream_is_reference(module):
            continue
        module.get_rope_index = types.MethodType(reference_rope_index, module)
        changed += 1
    if changed:
        logger.debug("using the released M-RoPE rule on %d Qwen2.5-VL module(s)", changed)
    return changed
