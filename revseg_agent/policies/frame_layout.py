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

With `frame_timing="floor"` (the default) the rate fed is never above `MAX_FED_FPS`. A temporal
slot's M-RoPE time is `floor(t * second_per_grid * tokens_per_second)` (2 steps a second): slots
closer than 0.5 s share positions (16 frame ids of a 3 s clip would get 6), while the prompt asks the model
to tell them apart; Qwen's own sampling (qwen-vl-utils, 2 fps, at least 4 frames) never feeds
slots closer than that. So a clip sampled more densely is fed as if slowed to 0.5 s a slot:
every frame id keeps its own time (in `frame-per-slot`), the order is kept, and the real times
stay in the prompt's frame list. `"real"` feeds the sampling rate as it is: what the shipped tiny
checkpoints were trained with; a checkpoint names its timing in `revseg.json` beside its
weights (`checkpoint_frame_timing`), which `revseg train` writes, so a policy sees its clips
timed as in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from revseg_agent.policies.base import VideoFrames

FrameLayout = Literal["frame-per-slot", "paired"]
#: How the fed rate is derived: floored at one slot per 0.5 s (`floor`), or the sampling's own.
FrameTiming = Literal["floor", "real"]
FRAME_TIMINGS: tuple[FrameTiming, ...] = ("floor", "real")
DEFAULT_FRAME_TIMING: FrameTiming = "floor"
#: Settings a checkpoint was trained with that its weights and configs do not say.
CHECKPOINT_SETTINGS = "revseg.json"
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
    clip: VideoFrames,
    layout: FrameLayout,
    temporal_patch_size: int = TEMPORAL_PATCH_SIZE,
    timing: FrameTiming = DEFAULT_FRAME_TIMING,
) -> VideoFrames:
    """The frames in the order the model is fed them (each repeated for `frame-per-slot`), with
    the interval they are fed at (floored for `timing="floor"`: see the module doc)."""
    repeat = repeats(layout, temporal_patch_size)
    interval = sample_interval_s(clip) / repeat
    if timing == "floor":
        interval = max(interval, 1.0 / MAX_FED_FPS)
    return VideoFrames(
        frames=[f for f in clip.frames for _ in range(repeat)],
        frame_indices=[i for i in clip.frame_indices for _ in range(repeat)],
        fps=clip.fps,
        total_num_frames=clip.total_num_frames,
        sample_interval_s=interval,
    )


def check_timing(timing: str) -> FrameTiming:
    if timing not in FRAME_TIMINGS:
        raise ValueError(f"unknown frame timing {timing!r}; choose one of {', '.join(FRAME_TIMINGS)}")
    return timing


def checkpoint_frame_timing(name_or_path: str | Path) -> FrameTiming:
    """The timing a local checkpoint was trained with (`revseg.json`), else the default."""
    path = Path(name_or_path).expanduser() / CHECKPOINT_SETTINGS
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT_FRAME_TIMING
    return check_timing(str(settings.get("frame_timing", DEFAULT_FRAME_TIMING)))


def write_checkpoint_settings(folder: str | Path, *, frame_timing: FrameTiming) -> None:
    """Record beside a checkpoint's weights what a later run must reproduce (`revseg train`)."""
    path = Path(folder) / CHECKPOINT_SETTINGS
    path.write_text(json.dumps({"frame_timing": frame_timing}, indent=2) + "\n", encoding="utf-8")


def sample_interval_s(clip: VideoFrames) -> float:
    """Seconds between consecutive frames of `clip` in the original video."""
    if clip.sample_interval_s is not None:
        return clip.sample_interval_s
    indices = list(clip.frame_indices)
    if len(indices) < 2 or indices[-1] == indices[0]:
        return 1.0 / float(clip.fps)
    return (indices[-1] - indices[0]) / (len(indices) - 1) / float(clip.fps)


def sampled_fps(clip: VideoFrames) -> float:
    """Frames per second of the frames as fed (what M-RoPE's temporal positions follow)."""
    return 1.0 / sample_interval_s(clip)


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


def timestamp_metadata(clip: VideoFrames, num_frames: int | None = None) -> dict[str, Any]:
    """Metadata for a family that writes each temporal slot's time as text (Qwen3-VL): the
    video's own rate and the original index of every frame as fed (the last repeated up to
    `num_frames`, as qwen-vl-utils pads), so the processor's `<t seconds>` are the real times of
    the frames, the same times round 1's prompt lists. Qwen3-VL's M-RoPE gives every slot the same
    temporal position, so the floor of `FrameTiming` does not apply."""
    indices = list(clip.frame_indices)
    count = len(indices) if num_frames is None else num_frames
    indices += [indices[-1]] * (count - len(indices))
    return {
        "fps": float(clip.fps),
        "total_num_frames": int(clip.total_num_frames),
        "frames_indices": indices[:count],
    }
