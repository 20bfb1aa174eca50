"""Peak memory of tracking + writing outputs, short vs long 480p clip, streamed vs all in memory.

Each measurement runs in its own process (peak RSS, `VmHWM`, is per process): track a box
on the middle frame, then write what `revseg segment` writes (masks.json, PNG masks, overlay).
- streamed: `tracker.stream` -> `MaskStreamWriter` (RLE) -> `write_outputs` frame by frame
  (classical: pre-keyframe frames spilled to disk; SAM2: frames read on demand, memory outside
  its attention window dropped);
- in-memory: the path before streaming (classical: frames in memory; SAM2: sam2's own
  `init_state`, every frame at the model's input size) -> one dense `(frames, H, W)` stack.
Prints peak RSS per run (and, to tell a peak from growth: the peak right after building the
tracker, the largest resident size sampled while streaming, the resident size at the end), the
long/short ratio per path, and whether the streamed masks equal
the in-memory ones. SAM2 is a random-init SAM2.1 Hiera-T at `--sam2-image-size` (default 1024,
the released models' input size): memory is what is measured, not mask quality. On a CPU SAM2
Hiera-T at 1024 takes ~4 s a frame; `--sam2-model tiny` keeps its per-frame state with a narrow
image trunk and runs several times faster.

Usage: python benchmarks/long_video_memory.py [--frames 100 1000] [--sam2-frames 100 1000]
       [--trackers classical sam2] [--sam2-image-size 1024] [--sam2-model hiera-t|tiny]
       [--modes streamed in-memory] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SIZE = (480, 854)  # 480p, DAVIS's resolution
SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# `--sam2-model tiny`: Hiera-T's config with a narrow, shallow image trunk (8 channels, 5 blocks)
# and one memory-attention layer instead of four. What SAM2 keeps per frame (the input-size image,
# 256-channel FPN features of the frames it is working on, 64-channel mask memories, object
# pointers, the 7-frame memory bank) is Hiera-T's; the layers run one after another, so one layer
# has the same transient peak. On this CPU (one thread, 1024) Hiera-T takes ~4 s a frame, most of
# it the four memory-attention layers over 64x64 tokens; the trunk alone 2.7 s vs 0.37 s.
SAM2_MODELS: dict[str, list[str]] = {
    "hiera-t": [],
    "tiny": [
        "++model.image_encoder.trunk.embed_dim=8",
        "++model.image_encoder.trunk.stages=[1,1,2,1]",
        "++model.image_encoder.trunk.global_att_blocks=[3]",
        "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
        "++model.memory_attention.num_layers=1",
    ],
}


def write_clip(path: Path, num_frames: int) -> Path:
    """A 480p mp4: two shapes drifting over a textured floor (deterministic)."""
    rng = np.random.default_rng(0)
    h, w = SIZE
    floor = cv2.resize(rng.integers(40, 110, (h // 16, w // 16, 3)).astype(np.uint8), (w, h))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 24.0, (w, h))
    for i in range(num_frames):
        frame = floor.copy()
        t = i / max(1, num_frames - 1)
        cv2.rectangle(frame, (int(80 + 500 * t), 150), (int(160 + 500 * t), 230), (30, 30, 220), -1)
        cv2.circle(frame, (600, int(80 + 300 * t)), 40, (220, 120, 30), -1)
        writer.write(frame)
    writer.release()
    return path


def box_on(num_frames: int, key: int) -> list[float]:
    t = key / max(1, num_frames - 1)
    return [80 + 500 * t - 4, 146, 160 + 500 * t + 4, 234]


def child(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON line with the peak RSS."""
    from revseg_agent.app.outputs import write_overlay_video
    from revseg_agent.masks_io import MaskStreamWriter, write_masks_json, write_png_masks
    from revseg_agent.types import Box
    from revseg_agent.video import open_video

    video = open_video(args.clip)
    key = video.num_frames // 2
    boxes = [Box.from_list(box_on(video.num_frames, key))]
    streamed = args.mode == "streamed"
    if args.tracker == "classical":
        from revseg_agent.tools.classical import ClassicalTracker, ClassicalTrackerConfig

        tracker = ClassicalTracker(ClassicalTrackerConfig(frame_store="disk" if streamed else "memory"))
    else:
        from revseg_agent.tools.sam2_tracker import SAM2Tracker

        tracker = SAM2Tracker.from_checkpoint(
            args.checkpoint,
            SAM2_CONFIG,
            device="cpu",
            image_size=args.image_size,
            stream_frames=streamed,
            hydra_overrides=SAM2_MODELS[args.sam2_model],
        )
    out = Path(args.out)
    load_peak_mb = _peak_mb()  # set by building the tracker (weights, checkpoint read)
    stream_rss_mb = 0.0
    started = time.perf_counter()
    if streamed:
        writer = MaskStreamWriter(video.num_frames, video.info.height, video.info.width)
        for k, frame in enumerate(tracker.stream(video, frame_index=key, boxes=boxes)):
            writer.add(frame)
            if k % 10 == 0:
                stream_rss_mb = max(stream_rss_mb, _rss_mb())
        track = writer.track()
        write_masks_json(out / "masks.json", track)
        write_png_masks(out / "masks", (track.frame(i) for i in range(track.num_frames)))
        write_overlay_video(out / "overlay.mp4", video, track, keyframe=key, boxes=boxes)
    else:
        dense = tracker.track(video, frame_index=key, boxes=boxes)
        write_masks_json(out / "masks.json", dense)
        write_png_masks(out / "masks", dense.masks)
        write_overlay_video(out / "overlay.mp4", video, dense, keyframe=key, boxes=boxes)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "peak_mb": _peak_mb(),
                "seconds": seconds,
                "load_peak_mb": load_peak_mb,
                "stream_rss_mb": stream_rss_mb,
                "end_rss_mb": _rss_mb(),
            }
        )
    )


def _peak_mb() -> float:
    """This process's peak resident memory: `VmHWM` of `/proc/self/status`. Not `ru_maxrss`:
    Linux carries the pre-`exec` high-water mark into it, so a child started by this script
    would report at least the parent's resident size at the time of the spawn (measured: a
    14 MB child of a 1.5 GB parent reports 1514 MB)."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux (bytes on macOS)


def _rss_mb() -> float:
    """Current resident memory (Linux `/proc/self/statm`), to tell a peak from growth."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(clip: Path, tracker: str, mode: str, out: Path, args: argparse.Namespace) -> dict[str, float]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", "--clip", str(clip), "--tracker", tracker, "--mode", mode]
    cmd += [
        "--out",
        str(out),
        "--checkpoint",
        str(args.checkpoint),
        "--sam2-image-size",
        str(args.image_size),
        "--sam2-model",
        args.sam2_model,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tracker} {mode} on {clip.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_sam2(path: Path, image_size: int, model_name: str) -> Path:
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(0)
    overrides = [f"++model.image_size={image_size}", *SAM2_MODELS[model_name]]
    model = build_sam2_video_predictor(SAM2_CONFIG, None, device="cpu", hydra_overrides_extra=overrides)
    torch.save({"model": model.state_dict()}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, nargs=2, default=[100, 1000], help="classical: short, long")
    parser.add_argument("--sam2-frames", type=int, nargs=2, default=[100, 1000], help="SAM2: short, long")
    parser.add_argument("--trackers", nargs="+", default=["classical", "sam2"], choices=["classical", "sam2"])
    parser.add_argument("--sam2-image-size", dest="image_size", type=int, default=1024)
    parser.add_argument(
        "--sam2-model",
        default="hiera-t",
        choices=sorted(SAM2_MODELS),
        help="random-init SAM2.1 Hiera-T, or 'tiny': Hiera-T with a narrow trunk (same per-frame state)",
    )
    parser.add_argument(
        "--modes", nargs="+", default=["streamed", "in-memory"], choices=["streamed", "in-memory"]
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for clips and outputs (default: temp)"
    )
    # child-process arguments
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--tracker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from revseg_agent.masks_io import read_masks_json

    work = args.work or Path(tempfile.mkdtemp(prefix="revseg-longvideo-"))
    work.mkdir(parents=True, exist_ok=True)
    if "sam2" in args.trackers:
        name = f"sam2.1_{args.sam2_model}_{args.image_size}.pt"
        args.checkpoint = build_sam2(work / name, args.image_size, args.sam2_model)
    print(f"480p ({SIZE[1]}x{SIZE[0]}) clips; peak RSS of one process (MB)")
    print(
        f"{'tracker':<10} {'path':<10} {'frames':>7} {'peak MB':>9} {'load peak':>10} "
        f"{'max RSS streaming':>18} {'end RSS':>8} {'seconds':>8} {'masks equal':>12}"
    )
    for tracker in args.trackers:
        counts = args.frames if tracker == "classical" else args.sam2_frames
        peaks: dict[str, list[float]] = {mode: [] for mode in args.modes}
        for n in counts:
            clip = work / f"clip-{n}.mp4"
            if not clip.exists():
                write_clip(clip, n)
            runs = {m: measure(clip, tracker, m, work / f"{tracker}-{m}-{n}", args) for m in peaks}
            outputs = [read_masks_json(work / f"{tracker}-{m}-{n}" / "masks.json").frames for m in peaks]
            equal: bool | str = all(o == outputs[0] for o in outputs) if len(outputs) > 1 else "-"
            for mode, run in runs.items():
                peaks[mode].append(run["peak_mb"])
                peak, secs = run["peak_mb"], run["seconds"]
                load, during, end = run["load_peak_mb"], run["stream_rss_mb"], run["end_rss_mb"]
                print(
                    f"{tracker:<10} {mode:<10} {n:>7} {peak:>9.0f} {load:>10.0f} "
                    f"{during:>18.0f} {end:>8.0f} {secs:>8.1f} {equal!s:>12}"
                )
        for mode, (short, long) in peaks.items():
            ratio = f"{long / short:.2f}x ({counts[1]} vs {counts[0]} frames)"
            print(f"{tracker:<10} {mode:<10} long/short peak RSS: {ratio}")


if __name__ == "__main__":
    main()
