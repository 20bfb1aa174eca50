"""The SAM2 tool on a random-init SAM2.1 Hiera-T saved as a real checkpoint and loaded strictly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from revseg_agent.errors import CheckpointError
from revseg_agent.tools.base import collect_track
from revseg_agent.tools.sam2_tracker import JPEG_QUALITY, SAM2Tracker
from revseg_agent.types import Box
from revseg_agent.video import open_video

from .conftest import SAM2_TEST_CONFIG, SAM2_TEST_IMAGE_SIZE

pytestmark = pytest.mark.slow
sam2_build = pytest.importorskip("sam2.build_sam")

KEY = 6
BOX = Box(68, 100, 108, 140)  # the red square on frame 6 of the demo clip


def _direct_predictor_masks(checkpoint: Path, folder: Path, key: int, box: Box) -> np.ndarray:
    """Drive sam2's own predictor by hand, the way its README does."""
    predictor = sam2_build.build_sam2_video_predictor(
        SAM2_TEST_CONFIG,
        str(checkpoint),
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SAM2_TEST_IMAGE_SIZE}"],
    )
    predictor.fill_hole_area = 0
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        state = predictor.init_state(str(folder), offload_video_to_cpu=True)
        predictor.add_new_points_or_box(
            state, frame_idx=key, obj_id=1, box=np.array(box.to_list(), np.float32)
        )
        for reverse in (False, True):
            for idx, _, logits in predictor.propagate_in_video(state, start_frame_idx=key, reverse=reverse):
                out[idx] = (logits[0, 0] > 0).numpy()
    return np.stack([out[i] for i in range(len(out))])


@pytest.fixture(scope="module")
def tracker(tiny_sam2_checkpoint: Path) -> SAM2Tracker:
    return SAM2Tracker.from_checkpoint(
        tiny_sam2_checkpoint, SAM2_TEST_CONFIG, device="cpu", image_size=SAM2_TEST_IMAGE_SIZE
    )


def _jpeg_folder(demo_clip: Path, folder: Path) -> Path:
    folder.mkdir()
    for i, frame in enumerate(open_video(demo_clip).iter_frames()):
        cv2.imwrite(
            str(folder / f"{i:05d}.jpg"),
            cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        )
    return folder


def test_masks_equal_the_predictor_driven_directly(
    tracker: SAM2Tracker, tiny_sam2_checkpoint: Path, demo_clip: Path, tmp_path: Path
) -> None:
    folder = _jpeg_folder(demo_clip, tmp_path / "jpg")
    expected = _direct_predictor_masks(tiny_sam2_checkpoint, folder, KEY, BOX)
    ticks: list[int] = []
    from_folder = tracker.track(open_video(folder), frame_index=KEY, boxes=[BOX], progress=ticks.append)
    from_mp4 = tracker.track(open_video(demo_clip), frame_index=KEY, boxes=[BOX])
    assert expected.shape == (24, 240, 320)
    np.testing.assert_array_equal(from_folder.masks, expected)
    np.testing.assert_array_equal(from_mp4.masks, expected)
    assert sum(ticks) == tracker.work_units(open_video(folder)) == 25


def test_several_boxes_are_tracked_as_separate_objects(tracker: SAM2Tracker, demo_clip: Path) -> None:
    other = Box(222, 66, 258, 102)
    result = tracker.track(open_video(demo_clip), frame_index=KEY, boxes=[BOX, other])
    assert sorted(result.per_object) == [1, 2]
    np.testing.assert_array_equal(result.masks, result.per_object[1] | result.per_object[2])


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        SAM2Tracker.from_checkpoint(tmp_path / "sam2.pt", SAM2_TEST_CONFIG, device="cpu")


def test_checkpoint_missing_a_weight_is_rejected(tiny_sam2_checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(tiny_sam2_checkpoint, map_location="cpu", weights_only=True)["model"]
    state.pop(next(iter(state)))
    broken = tmp_path / "broken.pt"
    torch.save({"model": state}, broken)
    with pytest.raises(CheckpointError, match="does not match"):
        SAM2Tracker.from_checkpoint(broken, SAM2_TEST_CONFIG, device="cpu", image_size=SAM2_TEST_IMAGE_SIZE)


def test_checkpoint_of_another_config_is_rejected(tiny_sam2_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="does not match"):
        SAM2Tracker.from_checkpoint(
            tiny_sam2_checkpoint,
            "configs/sam2.1/sam2.1_hiera_s.yaml",
            device="cpu",
            image_size=SAM2_TEST_IMAGE_SIZE,
        )


NARROW_TRUNK = [
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
]


def test_a_variant_architecture_loads_with_its_hydra_overrides(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = sam2_build.build_sam2_video_predictor(
        SAM2_TEST_CONFIG,
        None,
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SAM2_TEST_IMAGE_SIZE}", *NARROW_TRUNK],
    )
    checkpoint = tmp_path / "narrow.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    tracker = SAM2Tracker.from_checkpoint(
        checkpoint,
        SAM2_TEST_CONFIG,
        device="cpu",
        image_size=SAM2_TEST_IMAGE_SIZE,
        hydra_overrides=NARROW_TRUNK,
    )
    assert tracker.predictor.image_encoder.trunk.channel_list == [64, 32, 16, 8]
    with pytest.raises(CheckpointError, match="does not match"):
        SAM2Tracker.from_checkpoint(
            checkpoint, SAM2_TEST_CONFIG, device="cpu", image_size=SAM2_TEST_IMAGE_SIZE
        )


# -- SAM2 as its authors run it on a GPU ------------------------------------------------------------


def test_out_of_memory_is_reported_as_such(
    tiny_sam2_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's OutOfMemoryError is a RuntimeError, the type a strict load mismatch raises."""
    from revseg_agent.errors import ResourceError

    def oom(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(sam2_build, "build_sam2_video_predictor", oom)
    with pytest.raises(ResourceError, match="out of cuda memory") as info:
        SAM2Tracker.from_checkpoint(tiny_sam2_checkpoint, SAM2_TEST_CONFIG, device="cuda")
    assert not isinstance(info.value, CheckpointError)


@pytest.mark.parametrize(
    ("extension", "device", "fill_hole_area"), [(True, "cuda", 8), (False, "cuda", 0), (True, "cpu", 0)]
)
def test_hole_filling_follows_the_extension(
    tiny_sam2_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    extension: bool,
    device: str,
    fill_hole_area: int,
) -> None:
    from revseg_agent.tools import sam2_tracker

    built = {}
    real_build = sam2_build.build_sam2_video_predictor

    def build_on_cpu(config: str, ckpt: str, device: str, **kwargs: object):  # type: ignore[no-untyped-def]
        built["device"] = device  # the model is built on the CPU here; the decision sees `device`
        return real_build(config, ckpt, device="cpu", **kwargs)

    monkeypatch.setattr(sam2_build, "build_sam2_video_predictor", build_on_cpu)
    monkeypatch.setattr(sam2_tracker, "sam2_extension_available", lambda: extension)
    tracker = SAM2Tracker.from_checkpoint(
        tiny_sam2_checkpoint, SAM2_TEST_CONFIG, device=device, image_size=SAM2_TEST_IMAGE_SIZE
    )
    assert built["device"] == device
    assert tracker.predictor.fill_hole_area == fill_hole_area  # 8: sam2.1 configs' own value


@pytest.mark.parametrize(
    ("device", "dtype"), [("cuda", torch.bfloat16), ("cuda:1", torch.bfloat16), ("cpu", None)]
)
def test_bf16_autocast_on_cuda_only(device: str, dtype: torch.dtype | None) -> None:
    from revseg_agent.tools.sam2_tracker import autocast_dtype

    assert autocast_dtype(torch.device(device)) == dtype


def test_propagation_runs_under_the_device_autocast(
    tracker: SAM2Tracker, demo_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from revseg_agent.tools import sam2_tracker

    seen: list[tuple[str, object]] = []
    real_propagate = tracker.predictor.propagate_in_video

    def propagate(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(("cpu", torch.is_autocast_enabled("cpu")))
        yield from real_propagate(*args, **kwargs)

    monkeypatch.setattr(tracker.predictor, "propagate_in_video", propagate)
    tracker.track(open_video(demo_clip), frame_index=KEY, boxes=[BOX])
    assert seen and not any(enabled for _, enabled in seen)  # fp32 on the CPU, as before
    monkeypatch.setattr(sam2_tracker, "autocast_dtype", lambda device: torch.bfloat16)
    seen.clear()
    tracker.track(open_video(demo_clip), frame_index=KEY, boxes=[BOX])
    assert seen and all(enabled for _, enabled in seen)  # the device's autocast wraps propagation


def test_same_input_same_masks_whatever_ran_before(tracker: SAM2Tracker, demo_clip: Path) -> None:
    first = tracker.track(open_video(demo_clip), frame_index=KEY, boxes=[BOX]).masks
    torch.manual_seed(1234)
    torch.rand(1000)  # unrelated work that moves torch's generator
    again = tracker.track(open_video(demo_clip), frame_index=KEY, boxes=[BOX]).masks
    assert np.array_equal(first, again)


LONG = 60  # frames: longer than twice SAM2's memory window, so memory really gets dropped


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from revseg_agent.synth.square_clip import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("long") / "long.mp4", num_frames=LONG)


@pytest.mark.parametrize("key", [10, 45])
def test_streamed_frames_and_dropped_memory_give_the_all_frames_masks(
    tiny_sam2_checkpoint: Path, long_clip: Path, key: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from revseg_agent.synth.square_clip import square_box
    from revseg_agent.tools import sam2_tracker

    def build(stream_frames: bool) -> SAM2Tracker:
        return SAM2Tracker.from_checkpoint(
            tiny_sam2_checkpoint,
            SAM2_TEST_CONFIG,
            device="cpu",
            image_size=SAM2_TEST_IMAGE_SIZE,
            stream_frames=stream_frames,
        )

    boxes = [square_box(key), Box(222, 42 + 4 * key, 258, 78 + 4 * key)]
    video = open_video(long_clip)
    expected = build(False).track(video, frame_index=key, boxes=boxes)
    streaming = build(True)
    held: list[int] = []
    loaded: list[sam2_tracker.LazyFrames] = []
    real_drop = sam2_tracker._drop_unreachable_memory

    def spy(state: dict, keyframe: int, current: int, reverse: bool, window: int) -> None:
        real_drop(state, keyframe, current, reverse, window)
        held.append(max(len(o["non_cond_frame_outputs"]) for o in state["output_dict_per_obj"].values()))
        loaded.append(state["images"])

    monkeypatch.setattr(sam2_tracker, "_drop_unreachable_memory", spy)
    frames = list(streaming.stream(video, frame_index=key, boxes=boxes))
    assert [f.index for f in frames] == [key, *range(key + 1, LONG), *range(key - 1, -1, -1)]
    got = collect_track(frames, video, 2)
    for obj in (1, 2):
        np.testing.assert_array_equal(got.per_object[obj], expected.per_object[obj])
    window = streaming.memory_window()
    assert window == 17  # Hiera-T: 7 mask memories, 16 object pointers, one of slack
    assert len(held) == LONG + 1  # sam2 visits the keyframe in both directions
    assert max(held) <= 2 * window + 1 < LONG - 1  # bounded, and the bound is below the video
    lazy = loaded[0]
    assert isinstance(lazy, sam2_tracker.LazyFrames) and len(lazy._cache) <= lazy.keep


def _circle_box(index: int) -> Box:
    """The blue circle of the demo clip on frame `index` (radius 18 around (240, 60 + 4i))."""
    return Box(222, 42 + 4 * index, 258, 78 + 4 * index)


def test_a_video_s_prompts_in_one_pass_equal_each_prompt_alone_with_the_encoder_run_once_a_frame(
    tracker: SAM2Tracker, demo_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stream_group`: the expressions of one video, each with its own keyframe and boxes (one
    with two), tracked together. Every prompt's masks equal `stream` with that prompt alone, to
    the bit; SAM2's image encoder runs once per frame of a pass for all of them."""
    from revseg_agent.synth.square_clip import square_box
    from revseg_agent.tools.base import TrackPrompt

    video = open_video(demo_clip)
    prompts = [
        TrackPrompt(KEY, (BOX,)),
        TrackPrompt(15, (square_box(15), _circle_box(15))),
        TrackPrompt(KEY, (_circle_box(KEY),)),
        TrackPrompt(0, (square_box(0),)),
    ]
    calls = {"n": 0}
    encode = tracker.predictor.forward_image

    def counted(image: torch.Tensor) -> object:
        calls["n"] += 1
        return encode(image)

    monkeypatch.setattr(tracker.predictor, "forward_image", counted)
    alone: list[dict[int, dict[int, np.ndarray]]] = []
    for p in prompts:
        frames = tracker.stream(video, frame_index=p.frame_index, boxes=p.boxes)
        alone.append({f.index: f.objects for f in frames})
    calls_alone, calls["n"] = calls["n"], 0
    grouped: list[dict[int, dict[int, np.ndarray]]] = [{} for _ in prompts]
    ticks: list[int] = []
    for k, frame in tracker.stream_group(video, prompts, progress=ticks.append):
        assert frame.index not in grouped[k]  # every frame once per prompt
        grouped[k][frame.index] = frame.objects
    for k, p in enumerate(prompts):
        assert sorted(grouped[k]) == list(range(video.num_frames))
        for i in range(video.num_frames):
            assert sorted(grouped[k][i]) == list(range(1, len(p.boxes) + 1))
            for obj, mask in alone[k][i].items():
                np.testing.assert_array_equal(grouped[k][i][obj], mask)
    # the forward pass from frame 0 and the backward pass from frame 15, once each; plus each
    # session's own start-up (its first frame, its keyframe's prompt)
    passes = video.num_frames + 16
    assert sum(ticks) == passes
    assert calls["n"] <= passes + 2 * len(prompts) < calls_alone
