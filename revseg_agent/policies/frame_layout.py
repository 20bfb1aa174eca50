"""How round 1's sampled frames are laid out for Qwen2.5-VL, and the timing sent with them.

Qwen2.5-VL merges every `temporal_patch_size` (2) consecutive video frames into one temporal patch:
16 frames fed as they are become 8 temporal slots, so frames 2k-1 and 2k share the same tokens
while the prompt asks for one of 16 ids. Two layouts:
- `"frame-per-slot"` (default): each sampled frame is repeated `temporal_patch_size` times, so
  every frame id has its own temporal slot (its own tokens and M-RoPE time) at the same
  resolution; it costs twice the video tokens of `"paired"`.
- `"paired"`: the frames as sampled (two per slot; what a plain video input does).
The timing is computed here once for the local and the served policy: `sampled_fps` is the rate
of the frames as fed (the sampling interval of the original video, doubled by repetition), and
the metadata is written so that transformers' `VideoMetadata.sampled_fps` (frames / total * fps)
and vLLM's `video/jpeg` loader both derive exactly that rate.

The rate fed is never above `MAX_FED_FPS`. A temporal slot's M-RoPE time is
`floor(t * second_per_grid * tokens_per_second)` (2 steps a second): slots closer than 0.5 s
share positions (16 frame ids of a 3 s clip would get 6 times), while the prompt asks the model
to tell them apart; Qwen's own sampling (qwen-vl-utils, 2 fps, at least 4 frames) never feeds
slots closer than that. So a clip sampled more densely is fed as if slowed to 0.5 s a slot:
every frame id keeps its own time (in `frame-per-slot`), the order is kept, and the real times
stay in the prompt's frame list.
"""

from __future__ import annotations

from typing import Any, Literal

from revseg_agent.policies.base import VideoFrames

FrameLayout = Literal["frame-per-slot", "paired"]
FRAME_LAYOUTS: tuple[FrameLayout, ...] = ("frame-per-slot", "paired")
DEFAULT_FRAME_LAYOUT: FrameLayout = "frame-per-slot"
#: Qwen2.5-VL's temporal patch size (frames per temporal slot).
TEMPORAL_PATCH_SIZE = 2
#: Qwen2.5-VL's M-RoPE time steps per second of video (`vision_config.tokens_per_second`).
TOKENS_PER_SECOND = 2.0
#: The fastest rate frames are fed at: one temporal slot per 1 / TOKENS_PER_SECOND seconds.
MAX_FED_FPS = TEMPORAL_PATCH_SIZE * TOKENS_PER_SECOND


def check_layout(layout: str) -> FrameLayout:
    if layout not in FRAME_LAYOUTS:
        raise ValueError(f"unknown frame layout {layout!r}; choose one of {', '.join(FRAME_LAYOUTS)}")
    return layout


def repeats(layout: FrameLayout, temporal_patch_size: int = TEMPORAL_PATCH_SIZE) -> int:
    """How many times each sampled frame is fed."""
    return temporal_patch_size if layout == "frame-per-slot" else 1


def model_frames(
    clip: VideoFrames, layout: FrameLayout, temporal_patch_size: int = TEMPORAL_PATCH_SIZE
) -> VideoFrames:
    """The frames in the order the model is fed them (each repeated for `frame-per-slot`)."""
    repeat = repeats(layout, temporal_patch_size)
    if repeat == 1:
        return clip
    return VideoFrames(
        frames=[f for f in clip.frames for _ in range(repeat)],
        frame_indices=[i for i in clip.frame_indices for _ in range(repeat)],
        fps=clip.fps,
        total_num_frames=clip.total_num_frames,
        sample_interval_s=sample_interval_s(clip) / repeat,
    )


def sample_interval_s(clip: VideoFrames) -> float:
    """Seconds between consecutive frames of `clip` in the original video."""
    if clip.sample_interval_s is not None:
        return clip.sample_interval_s
    indices = list(clip.frame_indices)
    if len(indices) < 2 or indices[-1] == indices[0]:
        return 1.0 / float(clip.fps)
    return (indices[-1] - indices[0]) / (len(indices) - 1) / float(clip.fps)


def sampled_fps(clip: VideoFrames) -> float:
    """Frames per second of the frames as fed (what M-RoPE's temporal positions follow), at most
    `MAX_FED_FPS` so that consecutive slots never share an M-RoPE time (see the module doc)."""
    return min(1.0 / sample_interval_s(clip), MAX_FED_FPS)


def video_metadata(clip: VideoFrames, num_frames: int | None = None) -> dict[str, Any]:
    """Metadata for `num_frames` frames as fed (default: the clip's) at `sampled_fps(clip)`.

    `frames_indices` count the frames as fed, so `len / total_num_frames * fps` is the rate
    itself (transformers' rule), and vLLM's checks (`total_num_frames >= frames sent`) hold."""
    count = len(clip.frames) if num_frames is None else num_frames
    return {
        "fps": sampled_fps(clip),
        "total_num_frames": count,
        "frames_indices": list(range(count)),
    }
