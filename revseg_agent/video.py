"""Open a video (a container file or a folder of frames), sample it and read frames lazily.

Why lazy: a long video must never be decoded whole just to pick 16 frames. Random access goes
through decord when it is installed (it seeks), sequential reads through OpenCV (fastest for
decoding everything, which only the tracker needs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revseg_agent.errors import VideoError
from revseg_agent.types import FrameSample, VideoInfo

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Frame rate assumed for a folder of frames (DAVIS, SA-V and MeViS frames are 24 fps videos).
DEFAULT_FOLDER_FPS = 24.0
#: The number of frames the policy sees in round 1 (the paper's setting).
DEFAULT_NUM_FRAMES = 16


def uniform_indices(num_frames: int, n: int) -> list[int]:
    """`n` frame indices spread evenly over `[0, num_frames - 1]`, both ends included.

    Same rule as qwen-vl-utils (`linspace(0, total - 1, n).round()`). When `n >= num_frames`
    every frame is returned once.
    """
    if num_frames <= 0:
        raise VideoError("the video has no frames")
    if n <= 0:
        raise ValueError(f"the number of sampled frames must be positive, got {n}")
    if n >= num_frames:
        return list(range(num_frames))
    return [int(i) for i in np.linspace(0, num_frames - 1, n).round().astype(int)]


def natural_key(name: str) -> tuple[object, ...]:
    """Sort key that orders embedded numbers by value ("frame_2" before "frame_10")."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def frame_files(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """The image files of a frame folder by stem, in natural order ({} when it is no folder)."""
    if not folder.is_dir():
        return {}
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in suffixes), key=lambda p: natural_key(p.name)
    )
    return {p.stem: p for p in files}


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 meanwhile to this module's debug log.

    decord prints `video_reader.cc:83: ERROR opening ...` (and FFmpeg its own line) straight to
    the terminal for a file that is not a video, above revseg's one clear message; Python cannot
    catch those writes, so the descriptor is pointed at a temporary file for the call.
    """
    with _stderr_lock, tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no descriptor 2 (a detached process): nothing would reach a terminal
            yield
            return
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                logger.debug("native output while opening a video: %s", text)


class Video:
    """A read-only handle on a video file or a folder of frames. Frames are RGB uint8 `(H, W, 3)`."""

    def __init__(self, path: str | Path, *, fps: float | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"video not found: {self.path}")
        self._frame_files: list[Path] | None = None
        self._uses_decord = False
        if self.path.is_dir():
            files = list(frame_files(self.path).values())
            if not files:
                raise VideoError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {self.path}")
            self._frame_files = files
            first = self._read_image(files[0])
            self.info = VideoInfo(
                path=str(self.path),
                num_frames=len(files),
                fps=float(fps or DEFAULT_FOLDER_FPS),
                width=int(first.shape[1]),
                height=int(first.shape[0]),
            )
        else:
            self.info = self._probe_container(fps)
        if self.info.num_frames <= 0:
            raise VideoError(f"the video has zero frames: {self.path}")

    # -- probing -----------------------------------------------------------------------------
    def _probe_container(self, fps: float | None) -> VideoInfo:
        try:
            import decord

            try:
                with native_stderr_to_log():  # decord's C++ log line and FFmpeg's, for a bad file
                    reader = self._open_decord()
                    num = len(reader)
                    if num == 0:
                        raise VideoError(f"the video has zero frames: {self.path}")
                    h, w = reader[0].shape[:2]  # a file that is not a video can open and fail here
            except (RuntimeError, decord.DECORDError) as exc:  # decord raises both
                raise VideoError(f"cannot read video {self.path}: not a readable video ({exc})") from exc
            # the reader is not kept: see `read`
            return VideoInfo(str(self.path), num, float(fps or reader.get_avg_fps()), int(w), int(h))
        except ImportError:
            pass
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise VideoError(f"cannot read video {self.path}")
            num = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            ok, frame = cap.read()
            if not ok or num <= 0:
                raise VideoError(f"the video has zero frames: {self.path}")
            return VideoInfo(
                str(self.path),
                num,
                float(fps or cap.get(cv2.CAP_PROP_FPS) or DEFAULT_FOLDER_FPS),
                int(frame.shape[1]),
                int(frame.shape[0]),
            )
        finally:
            cap.release()

    def _open_decord(self) -> Any:
        import decord

        self._uses_decord = True
        return decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=1)

    @staticmethod
    def _read_image(path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise VideoError(f"cannot read frame image {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    # -- access ------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.info.num_frames

    def sample(self, n: int = DEFAULT_NUM_FRAMES) -> FrameSample:
        """Uniformly sample `n` frames; returns original indices and their timestamps (seconds)."""
        idx = uniform_indices(self.num_frames, n)
        return FrameSample(tuple(idx), tuple(i / self.info.fps for i in idx))

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_frames:
            raise VideoError(f"frame {index} is out of range: the video has {self.num_frames} frames")

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Decode only the requested frames."""
        for i in indices:
            self._check_index(int(i))
        if self._frame_files is not None:
            return [self._read_image(self._frame_files[int(i)]) for i in indices]
        if self._uses_decord:
            # A fresh reader per call, dropped at once: once a decord reader has decoded a frame
            # it goes on decoding ahead in the background, holding the frames (measured on a
            # 1000-frame 480p mp4: 1.2 GB within 8 s of one read, 49 MB once dropped), so a
            # reader kept open grows toward the whole video while the tracker runs.
            batch = self._open_decord().get_batch([int(i) for i in indices]).asnumpy()
            return [np.ascontiguousarray(f) for f in batch]
        return self._read_cv2(indices)

    def frame(self, index: int) -> np.ndarray:
        return self.read([index])[0]

    def _read_cv2(self, indices: Sequence[int]) -> list[np.ndarray]:
        wanted = {int(i) for i in indices}
        found: dict[int, np.ndarray] = {}
        for i, f in enumerate(self.iter_frames()):
            if i in wanted:
                found[i] = f
                if len(found) == len(wanted):
                    break
        return [found[int(i)] for i in indices]

    def iter_frames(self) -> Iterator[np.ndarray]:
        """Decode every frame in order (for trackers), one at a time."""
        if self._frame_files is not None:
            for p in self._frame_files:
                yield self._read_image(p)
            return
        cap = cv2.VideoCapture(str(self.path))
        try:
            count = 0
            while count < self.num_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                count += 1
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()
        if count < self.num_frames:
            raise VideoError(f"{self.path} ended after {count} of {self.num_frames} frames")

    def read_all(self) -> np.ndarray:
        """Every frame as one `(N, H, W, 3)` array. Only for short videos and trackers that need it."""
        return np.stack(list(self.iter_frames()))


def open_video(path: str | Path, *, fps: float | None = None) -> Video:
    """Open a video file (mp4, avi, mkv, ... anything decord or OpenCV reads) or a folder of frames."""
    return Video(path, fps=fps)


class FrameCache:
    """Decoded frames shared by concurrent runs over the same videos.

    Why: a GRPO group runs the graph G times on one video; each run reads the same sampled frames
    (round 1, round 2's history) and keyframes. Through one cache the group decodes each frame
    once. Thread-safe; frames are returned read-only because every caller shares them. Bounded by
    `max_frames` (least recently used frames are dropped first).
    """

    def __init__(self, max_frames: int = 512) -> None:
        import threading
        from collections import OrderedDict

        self.max_frames = max_frames
        self._videos: dict[tuple[str, float | None], Video] = {}
        self._frames: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.decoded = 0  # frames actually decoded (for tests and benchmarks)

    def video(self, path: str | Path, *, fps: float | None = None) -> Video:
        key = (str(path), fps)
        with self._lock:
            native = self._videos.get((str(path), None))
            if native is not None and fps is not None and native.info.fps == fps:
                return native  # the rate asked for is the video's own (a node passing it on)
            if key not in self._videos:
                self._videos[key] = open_video(path, fps=fps)
            return self._videos[key]

    def read(self, path: str | Path, indices: Sequence[int], *, fps: float | None = None) -> list[np.ndarray]:
        """The frames at `indices`, decoding only those no earlier call decoded."""
        video = self.video(path, fps=fps)
        name = str(path)
        with self._lock:  # one decoder per video is not thread-safe; decoding is serialised anyway
            missing = sorted({int(i) for i in indices if (name, int(i)) not in self._frames})
            if missing:
                for i, frame in zip(missing, video.read(missing), strict=True):
                    frame.setflags(write=False)
                    self._frames[(name, i)] = frame
                self.decoded += len(missing)
            out = []
            for i in indices:
                self._frames.move_to_end((name, int(i)))
                out.append(self._frames[(name, int(i))])
            while len(self._frames) > self.max_frames:
                self._frames.popitem(last=False)
        return out
