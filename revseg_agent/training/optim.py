"""The optimizer: AdamW with fp32 master weights for half-precision models, and gradient clipping.

Why master weights: AdamW on bf16 weights rounds most updates away. Near a weight of 0.02 bf16's
spacing is 1.2e-4, and an update at lr 1e-6 is about 1e-6, so `w + update == w` and the run
does not learn while its loss curve looks normal. As in mixed-precision training (and DeepSpeed's
bf16 mode, which does this itself), the optimizer steps fp32 copies of the trainable
weights and copies them back to the model after each step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

HALF = (torch.bfloat16, torch.float16)


class MasterWeightAdamW(torch.optim.Optimizer):
    """AdamW over fp32 master copies of half-precision parameters (fp32 ones are stepped as is).

    The model keeps its half-precision weights for forward and backward; `step` copies their
    gradients into the masters (fp32), steps, and writes the masters back (rounded once). The
    masters are part of `state_dict`, so a resumed run continues from the exact fp32 values."""

    def __init__(self, params: Iterable[torch.nn.Parameter], **adamw: Any) -> None:
        self.model_params = [p for p in params if p.requires_grad]
        self.masters = [
            p.detach().clone().float().requires_grad_(True) if p.dtype in HALF else p
            for p in self.model_params
        ]
        self.inner = torch.optim.AdamW(self.masters, **adamw)
        # share the inner optimizer's groups, so schedulers and `lr` reads see one set of groups
        self.param_groups = self.inner.param_groups
        self.defaults = self.inner.defaults
        self.state = self.inner.state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for param, master in zip(self.model_params, self.masters, strict=True):
            if master is param:
                continue
            master.grad = None if param.grad is None else param.grad.float()
        loss = self.inner.step(closure)
        for param, master in zip(self.model_params, self.masters, strict=True):
            if master is not param:
                param.copy_(master)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.model_params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.inner.state_dict(),
            "masters": [
                m.detach().clone() if m is not p else None
                for m, p in zip(self.masters, self.model_params, strict=True)
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        with torch.no_grad():
            for master, param, saved in zip(self.masters, self.model_params, state["masters"], strict=True):
                if saved is not None and master is not param:
                    master.copy_(saved)
                    param.copy_(saved)


def build_optimizer(
    params: Iterable[torch.nn.Parameter], *, learning_rate: float, weight_decay: float, master_weights: bool
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; with `master_weights`, half-precision ones get fp32
    masters (`MasterWeightAdamW`). DeepSpeed runs keep plain AdamW: its bf16 mode holds fp32
    masters itself."""
    trainable = [p for p in params if p.requires_grad]
    if master_weights and any(p.dtype in HALF for p in trainable):
        return MasterWeightAdamW(trainable, lr=learning_rate, weight_decay=weight_decay)
    return torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=weight_decay)


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float | None) -> float:
    """Clip the gradients' global L2 norm to `max_norm` (None: measure only); returns the norm
    before clipping (the `grad_norm` metric)."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    limit = float("inf") if max_norm is None else max_norm
    return float(torch.nn.utils.clip_grad_norm_(grads, limit))
