"""Which prompt each position of a training run takes: TRL's sampler semantics, resumable.

TRL (`RepeatSampler`, `shuffle_dataset=True`) walks the prompts in a seeded random order, each
prompt's `num_generations` rollouts together, and splits every global batch across processes.
Here the run's positions (step x accumulation x processes x prompts per step) map to
`permutation(epoch)[position mod N]`, with a new permutation each epoch seeded by `seed + epoch`:
a global step of 16 prompts spans videos instead of walking one video's 34 expressions in order,
processes take disjoint prompts, and a resumed run continues the same order at the same place
(the mapping is a function of the position, not of state).
"""

from __future__ import annotations

import numpy as np


class PromptSampler:
    def __init__(self, num_prompts: int, *, seed: int = 0, shuffle: bool = True) -> None:
        if num_prompts < 1:
            raise ValueError("no prompts to sample")
        self.num_prompts = num_prompts
        self.seed = seed
        self.shuffle = shuffle
        self._epoch = -1
        self._order: np.ndarray = np.arange(num_prompts)

    def order(self, epoch: int) -> np.ndarray:
        """The prompts' order in `epoch` (the dataset order when not shuffling)."""
        if not self.shuffle:
            return np.arange(self.num_prompts)
        if epoch != self._epoch:
            self._order = np.random.default_rng(self.seed + epoch).permutation(self.num_prompts)
            self._epoch = epoch
        return self._order

    def index(self, position: int) -> int:
        """The prompt at a run's `position` (0-based, counted over every process)."""
        epoch, offset = divmod(position, self.num_prompts)
        return int(self.order(epoch)[offset])
