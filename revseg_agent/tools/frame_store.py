"""Where a tracker keeps frames it must revisit: in memory, or spilled to a temporary file.

Why: propagation runs forward from the keyframe and then backward, but videos decode forward.
The frames before the keyframe are decoded first and needed last, in reverse; holding them is
what made memory grow with the video's length. Spilled, they cost disk (the file is unlinked
from the start, so a crash leaves nothing behind) and are read back one at a time with `pread`,
which goes through the page cache and not the process's resident memory.
"""

from __future__ import annotations

import os
import tempfile
from typing import Literal, Protocol

import numpy as np

FrameStoreKind = Literal["disk", "memory"]


class FrameStore(Protocol):
    def append(self, frame: np.ndarray) -> None: ...

    def __getitem__(self, index: int) -> np.ndarray: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class MemoryFrames:
    """Frames kept as arrays (memory grows with the number stored)."""

    def __init__(self) -> None:
        self._frames: list[np.ndarray] = []

    def append(self, frame: np.ndarray) -> None:
        self._frames.append(frame)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._frames[index]

    def __len__(self) -> int:
        return len(self._frames)

    def close(self) -> None:
        self._frames.clear()


class DiskFrames:
    """Frames of one shape and dtype as fixed-size records in an anonymous temporary file."""

    def __init__(self, directory: str | None = None) -> None:
        self._file = tempfile.TemporaryFile(prefix="revseg-frames-", dir=directory)  # noqa: SIM115
        self._shape: tuple[int, ...] | None = None
        self._dtype: np.dtype | None = None
        self._count = 0

    def append(self, frame: np.ndarray) -> None:
        if self._shape is None:
            self._shape, self._dtype = frame.shape, frame.dtype
        elif frame.shape != self._shape or frame.dtype != self._dtype:
            raise ValueError(f"frame {frame.shape} {frame.dtype} differs from {self._shape} {self._dtype}")
        self._file.write(np.ascontiguousarray(frame).tobytes())
        self._count += 1

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self._count or self._shape is None or self._dtype is None:
            raise IndexError(f"frame {index} is not stored ({self._count} frames)")
        self._file.flush()
        size = int(np.prod(self._shape)) * self._dtype.itemsize
        data = os.pread(self._file.fileno(), size, index * size)
        return np.frombuffer(data, dtype=self._dtype).reshape(self._shape).copy()

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._file.close()


def open_frame_store(kind: FrameStoreKind) -> FrameStore:
    if kind == "disk":
        return DiskFrames()
    if kind == "memory":
        return MemoryFrames()
    raise ValueError(f"unknown frame store {kind!r}: choose 'disk' or 'memory'")
