"""Every frame id its own M-RoPE time: the timing fed with round 1's frames, on any clip length.

Qwen2.5-VL gives a temporal slot the time `floor(t * second_per_grid * 2)`; slots fed closer than
0.5 s share times. The fed rate is capped (`frame_layout.MAX_FED_FPS`) so they never do."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from revseg_agent.graphs.chats import round1_messages
from revseg_agent.policies.base import VideoFrames
from revseg_agent.policies.frame_layout import MAX_FED_FPS, TEMPORAL_PATCH_SIZE, model_frames, sampled_fps
from revseg_agent.policies.mrope import reference_rope_index
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.video import open_video

pytestmark = pytest.mark.slow


def write_clip(path: Path, *, frames: int, fps: float, size: tuple[int, int] = (96, 128)) -> Path:
    """A clip of a square moving right, `frames` long at `fps` (an mp4, or PNGs in a folder)."""
    h, w = size
    images = []
    for i in range(frames):
        image = np.full((h, w, 3), 40, np.uint8)
        x = 4 + i * (w - 24) // max(frames - 1, 1)
        image[30:50, x : x + 20] = (30, 30, 230)
        images.append(image)
    if path.suffix == ".mp4":
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
        for image in images:
            writer.write(image)
        writer.release()
    else:
        path.mkdir(parents=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(path / f"{i:05d}.png"), image)
    return path


def round1_clip(video_path: Path, num_frames: int = 16) -> VideoFrames:
    """The frames and timing round 1 sends for a video (what `sample_frames` samples)."""
    video = open_video(video_path)
    sample = video.sample(num_frames)
    return VideoFrames(
        frames=video.read(list(sample.indices)),
        frame_indices=list(sample.indices),
        fps=video.info.fps,
        total_num_frames=video.num_frames,
    )


def temporal_positions(policy: QwenVLPolicy, clip: VideoFrames) -> list[int]:
    """The M-RoPE times of the video's slots in round 1's input (the released rule)."""
    inputs = policy.prepare_inputs(round1_messages("q", [0.0] * len(clip.frames)), {"frames": clip})
    positions, _ = reference_rope_index(
        policy.model.model,
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        attention_mask=inputs["attention_mask"],
    )
    video = inputs["mm_token_type_ids"][0] == 2
    return sorted({int(t) for t in positions[0, 0][video].tolist()})


@pytest.mark.parametrize(
    ("name", "frames", "fps", "real_slot_s"),
    [
        ("clip.mp4", 30, 10.0, 29 / 15 / 10),  # a 3 s clip at 10 fps: 0.193 s between frame ids
        ("frames", 70, None, 69 / 15 / 24),  # a 70-frame folder at the assumed 24 fps: 0.19 s
        ("long.mp4", 300, 10.0, 299 / 15 / 10),  # 30 s: 2 s apart, fed at its real rate
    ],
)
def test_sixteen_frame_ids_get_sixteen_m_rope_times(
    tiny_policy_dir: Path, tmp_path: Path, name: str, frames: int, fps: float | None, real_slot_s: float
) -> None:
    policy = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")  # frame-per-slot
    clip = round1_clip(write_clip(tmp_path / name, frames=frames, fps=fps or 24.0))
    assert len(clip.frames) == 16
    times = temporal_positions(policy, clip)
    assert len(times) == 16, times  # one time per frame id, none shared
    fed = model_frames(clip, policy.frame_layout)  # each frame twice: one slot per frame id
    slot_s = TEMPORAL_PATCH_SIZE / sampled_fps(fed)
    assert slot_s == pytest.approx(max(real_slot_s, TEMPORAL_PATCH_SIZE / MAX_FED_FPS), rel=1e-3)


def test_without_the_floor_neighbouring_ids_would_share_times(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """The failure the floor removes: at the 3 s clip's real spacing 16 slots get 6 times."""
    policy = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    clip = round1_clip(write_clip(tmp_path / "clip.mp4", frames=30, fps=10.0))
    inputs = policy.prepare_inputs(round1_messages("q", [0.0] * 16), {"frames": clip})
    real = torch.tensor([29 / 15 / 10])  # seconds a slot at the real rate
    positions, _ = reference_rope_index(
        policy.model.model,
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=real,
        attention_mask=inputs["attention_mask"],
    )
    video = inputs["mm_token_type_ids"][0] == 2
    assert len({int(t) for t in positions[0, 0][video].tolist()}) == 6


def test_a_checkpoint_keeps_the_timing_it_was_trained_with(tiny_policy_dir: Path, tmp_path: Path) -> None:
    """`revseg-tiny-sft` was trained on clips fed at their real rate (`revseg.json`: "real"),
    `revseg-tiny` (from the grounding curriculum's snapshot, which had no file) at the floor; a
    checkpoint without the file gets the floor; `revseg train` writes the policy's."""
    from revseg_agent.graphs.registry import policy_source
    from revseg_agent.policies.frame_layout import checkpoint_frame_timing
    from revseg_agent.training.sft import save_policy

    assert checkpoint_frame_timing(policy_source("revseg-tiny-sft")) == "real"
    assert checkpoint_frame_timing(policy_source("revseg-tiny")) == "floor"
    assert QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu").frame_timing == "floor"
    real = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu", frame_timing="real")
    save_policy(real, tmp_path / "trained")
    assert QwenVLPolicy.from_pretrained(tmp_path / "trained", device="cpu").frame_timing == "real"
    clip = round1_clip(write_clip(tmp_path / "clip.mp4", frames=30, fps=10.0))
    assert len(temporal_positions(real, clip)) == 6  # what that checkpoint saw in training
