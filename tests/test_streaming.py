"""Long videos in bounded memory: masks streamed from the trackers to disk, equal to the
all-in-memory path, and nothing half-written when a run is interrupted."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from revseg_agent.app.outputs import write_outputs
from revseg_agent.graphs.traces import Trace
from revseg_agent.masks_io import (
    MaskStreamWriter,
    RleMaskTrack,
    read_mask_png,
    read_masks_json,
    write_masks_json,
)
from revseg_agent.synth.square_clip import DEMO_FRAMES, square_box
from revseg_agent.tools.base import ProgressCallback, collect_track, frames_of, stream_masks
from revseg_agent.tools.classical import ClassicalTracker, ClassicalTrackerConfig
from revseg_agent.tools.frame_store import DiskFrames, MemoryFrames
from revseg_agent.types import Box, FrameMasks, MaskTrack
from revseg_agent.video import Video, open_video


def _circle_box(i: int) -> Box:
    """The blue circle of the demo clip (centre (240, 60 + 4 i), radius 18) on frame i."""
    return Box(222, 42 + 4 * i, 258, 78 + 4 * i)


@pytest.mark.parametrize("store", [DiskFrames, MemoryFrames])
def test_frame_stores_give_back_what_was_stored(store: type) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (7, 5, 3), dtype=np.uint8) for _ in range(6)]
    held = store()
    for f in frames:
        held.append(f)
    assert len(held) == 6
    for i in (5, 0, 3):
        np.testing.assert_array_equal(held[i], frames[i])
    held.close()


def test_disk_frames_refuse_a_frame_of_another_shape() -> None:
    held = DiskFrames()
    held.append(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="differs"):
        held.append(np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(IndexError):
        held[1]
    held.close()


@pytest.mark.parametrize("key", [0, 9, DEMO_FRAMES - 1])
def test_classical_stream_order_and_equality_with_frames_in_memory(demo_clip: Path, key: int) -> None:
    video = open_video(demo_clip)
    boxes = [square_box(key), _circle_box(key)]
    on_disk = ClassicalTracker(ClassicalTrackerConfig(frame_store="disk"))
    in_memory = ClassicalTracker(ClassicalTrackerConfig(frame_store="memory"))
    streamed = list(on_disk.stream(video, frame_index=key, boxes=boxes))
    # the keyframe, forward to the end, then backward to frame 0: every frame once
    assert [f.index for f in streamed] == [key, *range(key + 1, DEMO_FRAMES), *range(key - 1, -1, -1)]
    assert all(sorted(f.objects) == [1, 2] for f in streamed)
    expected = in_memory.track(video, frame_index=key, boxes=boxes)
    got = collect_track(streamed, video, 2)
    for obj in (1, 2):
        np.testing.assert_array_equal(got.per_object[obj], expected.per_object[obj])
        assert expected.per_object[obj].sum(axis=(1, 2)).min() > 0  # both objects really tracked
    np.testing.assert_array_equal(got.masks, expected.masks)


def test_classical_stream_holds_no_frame_list(demo_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the disk store the pre-keyframe frames go to the temp file, not into memory."""
    from revseg_agent.tools import classical, frame_store

    kinds: list[str] = []
    real = frame_store.open_frame_store

    def spy(kind: frame_store.FrameStoreKind) -> frame_store.FrameStore:
        kinds.append(kind)
        store = real(kind)
        assert isinstance(store, DiskFrames)
        return store

    monkeypatch.setattr(classical, "open_frame_store", spy)
    ClassicalTracker().track(open_video(demo_clip), frame_index=12, boxes=[square_box(12)])
    assert kinds == ["disk"]


class _TrackOnly:
    """A third-party tracker with only `track` (no `stream`)."""

    name = "track-only"

    def work_units(self, video: Video) -> int:
        return video.num_frames

    def track(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> MaskTrack:
        masks = np.zeros((video.num_frames, video.info.height, video.info.width), bool)
        masks[:, :10, :10] = True
        return MaskTrack(masks, {1: masks})


def test_stream_masks_replays_a_tracker_without_stream(demo_clip: Path) -> None:
    video = open_video(demo_clip)
    frames = list(stream_masks(_TrackOnly(), video, frame_index=3, boxes=[square_box(3)]))
    assert [f.index for f in frames] == list(range(DEMO_FRAMES))
    assert all(f.union[:10, :10].all() and f.union.sum() == 100 for f in frames)


def _random_track(n: int, objects: int, seed: int = 0) -> MaskTrack:
    rng = np.random.default_rng(seed)
    per_object = {obj: rng.random((n, 12, 16)) > 0.7 for obj in range(1, objects + 1)}
    return MaskTrack.from_objects(per_object)


@pytest.mark.parametrize("objects", [1, 3])
def test_stream_writer_in_tracker_order_writes_the_dense_file(tmp_path: Path, objects: int) -> None:
    dense = _random_track(9, objects)
    writer = MaskStreamWriter(9, 12, 16, png_dir=tmp_path / "png")
    order = [4, 5, 6, 7, 8, 3, 2, 1, 0]
    frames = {f.index: f for f in frames_of(dense)}
    for i in order:
        writer.add(frames[i])
    writer.write_json(tmp_path / "streamed.json", tracker="x")
    write_masks_json(tmp_path / "dense.json", dense, tracker="x")
    assert json.loads((tmp_path / "streamed.json").read_text()) == json.loads(
        (tmp_path / "dense.json").read_text()
    )
    back = read_masks_json(tmp_path / "streamed.json")
    assert isinstance(back, RleMaskTrack) and back.num_frames == 9
    np.testing.assert_array_equal(back.masks, dense.masks)
    for obj in range(1, objects + 1):
        np.testing.assert_array_equal(back.per_object[obj], dense.per_object[obj])
    for i in (0, 8):
        np.testing.assert_array_equal(back.frame(i), dense.masks[i])
        np.testing.assert_array_equal(read_mask_png(tmp_path / "png" / f"{i:05d}.png"), dense.masks[i])
    assert writer.empty_frames == 0
    assert writer.area_sum / 9 == pytest.approx(dense.masks.mean())


def test_stream_writer_refuses_a_missing_frame_and_a_wrong_size() -> None:
    writer = MaskStreamWriter(3, 4, 4)
    writer.add(FrameMasks(0, {1: np.ones((4, 4), bool)}))
    with pytest.raises(ValueError, match="outside"):
        writer.add(FrameMasks(3, {1: np.ones((4, 4), bool)}))
    with pytest.raises(ValueError, match="shape"):
        writer.add(FrameMasks(1, {1: np.ones((4, 5), bool)}))
    with pytest.raises(ValueError, match="no mask for 2 frame"):
        writer.track()


class _FailingMasks:
    """An RLE track whose frame 5 cannot be decoded (a crash part-way through writing)."""

    def __init__(self, inner: RleMaskTrack) -> None:
        self.inner = inner

    @property
    def num_frames(self) -> int:
        return self.inner.num_frames

    def frame(self, index: int) -> np.ndarray:
        if index == 5:
            raise RuntimeError("interrupted")
        return self.inner.frame(index)


def test_interrupted_outputs_leave_nothing_half_written(demo_clip: Path, tmp_path: Path) -> None:
    video = open_video(demo_clip)
    track = ClassicalTracker().track(video, frame_index=0, boxes=[square_box(0)])
    masks_json = write_masks_json(tmp_path / "masks.json", track)
    trace = Trace.model_validate({"query": "q", "video_path": str(demo_clip), "policy": "p", "tracker": "t"})
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="interrupted"):
        write_outputs(
            out,
            video=video,
            track=_FailingMasks(read_masks_json(masks_json)),  # type: ignore[arg-type]
            trace=trace,
            masks_json=masks_json,
        )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks.json"]  # no .partial folder left
    write_outputs(out, video=video, track=read_masks_json(masks_json), trace=trace, masks_json=masks_json)
    pngs = sorted((out / "masks").glob("*.png"))
    assert len(pngs) == DEMO_FRAMES
    np.testing.assert_array_equal(np.stack([read_mask_png(p) for p in pngs]), track.masks)


def test_graph_writes_no_masks_when_the_tracker_fails_midway(demo_clip: Path, tmp_path: Path) -> None:
    from revseg_agent.graphs.context import Context
    from revseg_agent.graphs.graph import build_graph
    from revseg_agent.testing import ScriptedPolicy

    class Breaks(ClassicalTracker):
        def stream(self, video: Video, **kwargs: object) -> Iterator[FrameMasks]:  # type: ignore[override]
            for k, frame in enumerate(super().stream(video, **kwargs)):  # type: ignore[arg-type]
                if k == 4:
                    raise RuntimeError("tracker crashed")
                yield frame

    policy = ScriptedPolicy(
        [
            "<think>x</think><answer>frame id: 1\nobject description: the red square</answer>",
            '```json\n[{"bbox_2d": [36, 100, 76, 140], "label": "the red square"}]\n```',
        ]
    )
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    context = Context(policy=policy, tracker=Breaks(), artifacts_dir=artifacts)
    with pytest.raises(RuntimeError, match="tracker crashed"):
        build_graph().invoke({"video_path": str(demo_clip), "query": "the red square"}, context=context)
    assert list(artifacts.iterdir()) == []
