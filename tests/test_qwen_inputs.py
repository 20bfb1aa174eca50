"""Which leading tokens a batch may serve from one KV cache (no model needed)."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from revseg_agent.policies.qwen_batches import shared_prefix_length
from revseg_agent.policies.token_rows import TokenRow, VisualBlock


def block(kind: Literal["image", "video"], start: int, length: int, value: float = 0.0) -> VisualBlock:
    return VisualBlock(
        kind, start, length, torch.full((length * 4, 3), value), torch.tensor([1, 2, 2 * length])
    )


def row(ids: list[int], *blocks: VisualBlock) -> TokenRow:
    types = [0] * len(ids)
    for b in blocks:
        types[b.start : b.end] = [1 if b.kind == "image" else 2] * b.length
    return TokenRow(ids, types, tuple(blocks))


V = 9  # a placeholder id
CASES = {
    "identical rows keep one token each to run": ([row([1, 2, 3]), row([1, 2, 3])], 2),
    "a single row": ([row([1, 2, 3, 4])], 3),
    "rows differ after two tokens": ([row([1, 2, 3, 4]), row([1, 2, 5, 6])], 2),
    "nothing in common": ([row([1, 2]), row([3, 4])], 0),
    "shortest row bounds it": ([row([1, 2, 3, 4]), row([1, 2])], 1),
    "same video, then different answers": (
        [row([1, V, V, 2, 3], block("video", 1, 2)), row([1, V, V, 2, 4], block("video", 1, 2))],
        4,
    ),
    "same placeholders, other pixels": (
        [row([1, V, V, 2, 3], block("video", 1, 2)), row([1, V, V, 2, 4], block("video", 1, 2, value=1.0))],
        1,
    ),
    "never cut a visual": (
        [row([1, V, V, V, 5], block("video", 1, 3)), row([1, V, V, V, 6], block("video", 1, 2))],
        1,
    ),
    "images inside and outside the prefix": (
        [
            row([1, V, 2, V, 3], block("image", 1, 1), block("image", 3, 1)),
            row([1, V, 2, V, 3], block("image", 1, 1), block("image", 3, 1, value=2.0)),
        ],
        1,
    ),
    "video inside, image outside": (
        [
            row([1, V, V, 2, V, 3], block("video", 1, 2), block("image", 4, 1)),
            row([1, V, V, 2, V, 3], block("video", 1, 2), block("image", 4, 1, value=3.0)),
        ],
        4,
    ),
}


@pytest.mark.parametrize("rows, expected", list(CASES.values()), ids=list(CASES))
def test_shared_prefix_length(rows: list[TokenRow], expected: int) -> None:
    assert shared_prefix_length(rows) == expected
