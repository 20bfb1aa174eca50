"""Batches of Qwen-VL token rows: left padding, and shared-prefix layouts.

Rows are collated as `[shared prefix][padding][rest]`; with no shared prefix that is the usual
left padding. Generation encodes a prefix that every row shares (e.g. the round-1 video and query
of all G round-2 prompts of a group) once and reuses its KV cache for every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from revseg_agent.policies.token_rows import TEXT, TokenRow, VisualBlock


def collate(rows: Sequence[TokenRow], pad: int, *, shared: int = 0, pixels_from: int = 0) -> dict[str, Any]:
    """Model inputs for rows laid out as `[first `shared` tokens][padding][rest]`.

    `shared = 0` is left padding. `pixels_from` leaves out the patches of visuals that start
    before it (they are already in a KV cache); their grids stay, for M-RoPE positions.
    """
    width = max(len(r) for r in rows)
    ids, mask, types = [], [], []
    images: list[VisualBlock] = []
    videos: list[VisualBlock] = []
    for row in rows:
        fill = width - len(row)
        ids.append(row.input_ids[:shared] + [pad] * fill + row.input_ids[shared:])
        mask.append([1] * shared + [0] * fill + [1] * (len(row) - shared))
        types.append(row.mm_token_type_ids[:shared] + [TEXT] * fill + row.mm_token_type_ids[shared:])
        for block in row.blocks:
            (images if block.kind == "image" else videos).append(block)
    out: dict[str, Any] = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
        "mm_token_type_ids": torch.tensor(types, dtype=torch.long),
    }
    if images:
        out["image_grid_thw"] = torch.stack([b.grid for b in images])
        kept = [b.pixels for b in images if b.start >= pixels_from]
        if kept:
            out["pixel_values"] = torch.cat(kept)
    if videos:
        out["video_grid_thw"] = torch.stack([b.grid for b in videos])
        if any(b.second_per_grid is not None for b in videos):  # Qwen2.5-VL's M-RoPE time
            out["second_per_grid_ts"] = torch.tensor([b.second_per_grid or 1.0 for b in videos])
        kept = [b.pixels for b in videos if b.start >= pixels_from]
        if kept:
            out["pixel_values_videos"] = torch.cat(kept)
    return out


def shared_prefix_length(rows: Sequence[TokenRow]) -> int:
    """How many leading tokens every row shares and a KV cache of them can serve.

    The shared tokens must be equal, their visuals identical and whole, at least one token of
    every row must be left to run, and a kind of visual (image or video) must lie entirely
    inside or entirely outside the prefix (the model encodes each kind's patches in one call).
    """
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    p = 0
    while p < limit and all(r.input_ids[p] == first.input_ids[p] for r in rows[1:]):
        p += 1
    changed = True
    while changed and p > 0:
        changed = False
        for block in first.blocks:
            if block.start < p < block.end or (
                block.end <= p and not all(any(block.same_as(b) for b in r.blocks) for r in rows[1:])
            ):  # never cut a visual
                p, changed = block.start, True
        for kind in ("image", "video"):
            inside = [b.start for r in rows for b in r.blocks if b.kind == kind and b.start < p]
            outside = any(b.kind == kind and b.start >= p for r in rows for b in r.blocks)
            if inside and outside:
                p, changed = min(inside), True
    return p


def prefix_inputs(row: TokenRow, length: int) -> dict[str, Any]:
    """Model inputs for the first `length` tokens of a row (one row, no padding)."""
    prefix = TokenRow(
        row.input_ids[:length],
        row.mm_token_type_ids[:length],
        tuple(b for b in row.blocks if b.end <= length),
    )
    out: dict[str, Any] = {
        "input_ids": torch.tensor([prefix.input_ids], dtype=torch.long),
        "attention_mask": torch.ones((1, length), dtype=torch.long),
        "mm_token_type_ids": torch.tensor([prefix.mm_token_type_ids], dtype=torch.long),
    }
    images = [b for b in prefix.blocks if b.kind == "image"]
    videos = [b for b in prefix.blocks if b.kind == "video"]
    if images:
        out["pixel_values"] = torch.cat([b.pixels for b in images])
        out["image_grid_thw"] = torch.stack([b.grid for b in images])
    if videos:
        out["pixel_values_videos"] = torch.cat([b.pixels for b in videos])
        out["video_grid_thw"] = torch.stack([b.grid for b in videos])
        if any(b.second_per_grid is not None for b in videos):
            out["second_per_grid_ts"] = torch.tensor([b.second_per_grid or 1.0 for b in videos])
    return out
