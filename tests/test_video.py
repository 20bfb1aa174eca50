"""Opening, sampling and reading videos and frame folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revseg_agent.errors import VideoError
from revseg_agent.synth.square_clip import DEMO_FPS, DEMO_FRAMES, DEMO_SIZE, demo_frames
from revseg_agent.video import FrameCache, open_video, uniform_indices


@pytest.mark.parametrize(
    ("num_frames", "n", "expected"),
    [
        (10, 4, [0, 3, 6, 9]),
        (100, 2, [0, 99]),
        (5, 16, [0, 1, 2, 3, 4]),
        (1, 16, [0]),
        (16, 16, list(range(16))),
    ],
)
def test_uniform_indices(num_frames: int, n: int, expected: list[int]) -> None:
    assert uniform_indices(num_frames, n) == expected


def test_uniform_indices_rejects_bad_counts() -> None:
    with pytest.raises(VideoError):
        uniform_indices(0, 4)
    with pytest.raises(ValueError, match="positive"):
        uniform_indices(10, 0)


def test_mp4_info_and_sampling(demo_clip: Path) -> None:
    video = open_video(demo_clip)
    assert (video.num_frames, video.info.height, video.info.width) == (DEMO_FRAMES, *DEMO_SIZE)
    assert video.info.fps == pytest.approx(DEMO_FPS)
    sample = video.sample(4)
    assert sample.indices == (0, 8, 15, 23)
    assert sample.timestamps == pytest.approx(tuple(i / DEMO_FPS for i in (0, 8, 15, 23)))


def test_random_access_matches_sequential_decoding(demo_clip: Path) -> None:
    video = open_video(demo_clip)
    everything = video.read_all()
    picked = video.read([23, 0, 11])
    for index, frame in zip([23, 0, 11], picked, strict=True):
        np.testing.assert_array_equal(frame, everything[index])


def test_folder_is_sorted_naturally_and_lossless(demo_folder: Path) -> None:
    # frame_2.png must come before frame_10.png
    video = open_video(demo_folder, fps=12)
    assert video.num_frames == DEMO_FRAMES
    np.testing.assert_array_equal(video.frame(10), demo_frames()[10])
    assert video.sample(2).timestamps == (0.0, pytest.approx(23 / 12))


def test_frame_out_of_range(demo_clip: Path) -> None:
    with pytest.raises(VideoError, match="out of range"):
        open_video(demo_clip).frame(DEMO_FRAMES)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="not found"):
        open_video(tmp_path / "missing.mp4")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("no frames here")
    with pytest.raises(VideoError, match="no image files"):
        open_video(empty_dir)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError):
        open_video(broken)
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    with pytest.raises(VideoError):
        open_video(zero)


def test_frame_cache_decodes_once_and_shares_read_only_frames(demo_clip: Path) -> None:
    cache = FrameCache(max_frames=4)
    first = cache.read(demo_clip, [0, 5, 9])
    again = cache.read(demo_clip, [9, 5])
    assert cache.decoded == 3
    assert again[0] is first[2] and not again[0].flags.writeable
    direct = open_video(demo_clip).read([0, 5, 9])
    assert all(np.array_equal(a, b) for a, b in zip(first, direct, strict=True))
    cache.read(demo_clip, [1, 2, 3])  # over the bound: the least recently used frames go first
    cache.read(demo_clip, [9])
    assert cache.decoded == 6 + 1


def test_no_decord_reader_outlives_a_call(demo_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decord reader that has decoded a frame keeps decoding ahead in the background and holds
    the frames (1.2 GB within seconds on a 1000-frame 480p clip): a video that stays open while
    a tracker runs must not keep one. Every reader is gone once probing or a read returns."""
    import gc
    import weakref

    from revseg_agent.video import Video

    pytest.importorskip("decord")
    readers: list[weakref.ref[object]] = []
    opened = Video._open_decord

    def spy(self: Video) -> object:
        reader = opened(self)
        readers.append(weakref.ref(reader))
        return reader

    monkeypatch.setattr(Video, "_open_decord", spy)
    video = open_video(demo_clip)
    video.read([0, 3])
    video.frame(5)
    gc.collect()
    assert len(readers) == 3
    assert all(ref() is None for ref in readers)
