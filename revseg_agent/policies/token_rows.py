"""Token rows: one tokenised Qwen2.5-VL chat with where its images and videos sit, the unit that
`qwen_inputs` builds and `qwen_batches` collates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

#: `mm_token_type_ids` values of Qwen2.5-VL's processor: text 0, image 1, video 2.
TEXT, IMAGE, VIDEO = 0, 1, 2


@dataclass(frozen=True)
class VisualBlock:
    """One image or video inside a token row: where its placeholder tokens are and its patches."""

    kind: Literal["image", "video"]
    start: int
    length: int
    pixels: torch.Tensor
    grid: torch.Tensor  # (3,) temporal, height, width patches
    second_per_grid: float | None = None  # videos only

    @property
    def end(self) -> int:
        return self.start + self.length

    def same_as(self, other: VisualBlock) -> bool:
        return (
            self.kind == other.kind
            and self.start == other.start
            and self.length == other.length
            and self.second_per_grid == other.second_per_grid
            and torch.equal(self.grid, other.grid)
            and (self.pixels is other.pixels or torch.equal(self.pixels, other.pixels))
        )


@dataclass(frozen=True)
class TokenRow:
    """One tokenised chat (no padding) with its visual blocks."""

    input_ids: list[int]
    mm_token_type_ids: list[int]
    blocks: tuple[VisualBlock, ...]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __add__(self, other: TokenRow) -> TokenRow:
        shift = len(self)
        return TokenRow(
            self.input_ids + other.input_ids,
            self.mm_token_type_ids + other.mm_token_type_ids,
            self.blocks + tuple(replace(b, start=b.start + shift) for b in other.blocks),
        )

    @staticmethod
    def text(ids: Sequence[int]) -> TokenRow:
        return TokenRow(list(ids), [TEXT] * len(ids), ())
