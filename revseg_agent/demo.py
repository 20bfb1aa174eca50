"""A generated clip for the offline demo and tests: a red square moving right over a textured
background, with a blue circle as a distractor. Ground truth is known exactly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from revseg_agent.types import Box

#: Supervised steps that teach the demo's tiny policy the two-round answer format.
DEMO_SFT_STEPS = 150
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


def demo_policy(cache: Path) -> Path:
    """The demo's tiny policy: a random-init Qwen2.5-VL taught the answer format by SFT on
    generated clips (about 20 s on a CPU), saved under `cache` once and reused."""
    policy_dir = cache / "tiny-sft-policy"
    if (policy_dir / "config.json").is_file():
        return policy_dir
    from revseg_agent.policies.qwen import QwenVLPolicy
    from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl
    from revseg_agent.training.data import generated_samples
    from revseg_agent.training.recipe import GeneratedData
    from revseg_agent.training.sft import train_sft

    base = build_tiny_qwen2_5_vl(cache / "tiny-random-policy")
    policy = QwenVLPolicy.from_pretrained(base, device="cpu")
    samples = generated_samples(cache / "sft-clips", GeneratedData(num_samples=6, num_frames=12))
    train_sft(
        policy,
        samples,
        steps=DEMO_SFT_STEPS,
        learning_rate=3e-3,
        batch_size=1,
        num_frames=16,
        output_dir=policy_dir,
    )
    return policy_dir
