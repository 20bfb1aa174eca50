"""Log-probs of the tokens `generate` samples, without keeping full-vocabulary logits.

Why: `output_logits=True` keeps a `(rows, vocab)` fp32 tensor per generated token: with 8 rows of
1,024 tokens and Qwen's 152,064-entry vocabulary that is about 5 GB per copy. This processor sees
each step's raw logits before any other processor (it must be first in the list), keeps only the
previous step's log-softmax, and reads the chosen token's entry when the next step shows which
token was chosen: one `(rows, vocab)` tensor alive at a time.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class SampledTokenLogprobs(LogitsProcessor):
    """Records `log_softmax(raw_logits / temperature)` at each sampled token; returns the scores
    unchanged. Call `finish(sequences)` after `generate` for the `(rows, new tokens)` result."""

    def __init__(self, prompt_length: int, temperature: float = 1.0) -> None:
        self.prompt_length = prompt_length
        self.temperature = temperature
        self._pending: torch.Tensor | None = None
        self._chosen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._pending is not None:
            self._take(input_ids[:, -1])
        self._pending = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        assert self._pending is not None
        self._chosen.append(self._pending.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
        self._pending = None

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """`(rows, generated)` log-probs of the generated part of `sequences`."""
        generated = sequences.shape[1] - self.prompt_length
        if self._pending is not None and len(self._chosen) < generated:
            self._take(sequences[:, self.prompt_length + len(self._chosen)])
        if not self._chosen:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(self._chosen, dim=1).cpu()
