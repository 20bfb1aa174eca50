"""A generated clip for tests and benchmarks of the machinery: a red square moving right over a
textured background, with a blue circle as a distractor. Ground truth is known exactly.
(`revseg demo` runs a scene of the synthetic world instead: `revseg_agent.app.demo`.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from revseg_agent.types import Box

DEMO_SIZE = (240, 320)  # (height, width)
DEMO_FRAMES = 24
DEMO_FPS = 12.0
SQUARE = 40


def square_box(index: int) -> Box:
    """Ground-truth box of the red square on frame `index`."""
    x = 20 + 8 * index
    return Box(x, 100, x + SQUARE, 100 + SQUARE)


def demo_frames(num_frames: int = DEMO_FRAMES, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = DEMO_SIZE
    coarse = rng.integers(40, 90, (h // 8, w // 8, 3)).astype(np.uint8)
    background = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST)
    frames = []
    for i in range(num_frames):
        f = background.copy()
        cv2.circle(f, (240, 60 + 4 * i), 18, (40, 80, 230), -1)
        b = square_box(i)
        f[int(b.y1) : int(b.y2), int(b.x1) : int(b.x2)] = (230, 30, 30)
        frames.append(f)
    return frames


def make_demo_clip(path: str | Path, num_frames: int = DEMO_FRAMES) -> Path:
    """Write the demo clip as an mp4 (OpenCV `mp4v`) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = DEMO_SIZE
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), DEMO_FPS, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    try:
        for f in demo_frames(num_frames):
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
