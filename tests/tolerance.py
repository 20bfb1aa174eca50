"""Equality for results that cross processes, thread counts or devices.

Floats computed on another thread count (Ray workers run one torch thread, the main process
its default) or in another process (a server) are summed in another order: float32 log-probs of
the tiny policies then differ in the last bits (measured: |delta| ~5e-7, e.g. -5.638609409 vs
-5.638608932). Everything else (token ids, completions, boxes, frame indices, masks) must be
equal; floats are compared within `FLOAT_TOLERANCE`, far above that noise and far below any real
difference (a changed prompt or weight moves log-probs by 1e-2 and more).
"""

from __future__ import annotations

import math
from typing import Any

#: Absolute tolerance for floats that crossed processes or thread counts.
FLOAT_TOLERANCE = 1e-4


def differences(a: Any, b: Any, *, atol: float = FLOAT_TOLERANCE, path: str = "") -> list[str]:
    """Where `a` and `b` differ: exactly for everything but floats, floats within `atol`."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only on one side" for k in sorted(set(a) ^ set(b), key=str)]
        for k in sorted(set(a) & set(b), key=str):
            out += differences(a[k], b[k], atol=atol, path=f"{path}/{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += differences(x, y, atol=atol, path=f"{path}[{i}]")
        return out
    if isinstance(a, float) or isinstance(b, float):
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
        if not numbers:
            return [f"{path}: {a!r} != {b!r}"]
        if math.isnan(a) and math.isnan(b):
            return []
        return [] if abs(a - b) <= atol else [f"{path}: {a!r} != {b!r} (beyond {atol})"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def assert_equal_within_float_tolerance(a: Any, b: Any, *, atol: float = FLOAT_TOLERANCE) -> None:
    found = differences(a, b, atol=atol)
    assert not found, f"{len(found)} differences, first: " + "; ".join(found[:5])
