"""SAM2 (the `sam2` package) as a `Tracker`: a box prompt on the keyframe, propagated both ways.

Loading is strict: the checkpoint must be `{"model": state_dict}` matching the config exactly,
read with `torch.load(weights_only=True)` (what `sam2.build_sam` does). The `sam2` package is
imported lazily because importing it initialises Hydra for the whole process.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from revseg_agent.errors import CheckpointError, ResourceError
from revseg_agent.tools.base import FrameMasks, ProgressCallback, TrackPrompt, check_prompt, collect_track
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video

logger = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"
DEFAULT_SAM2_HUB_ID = "facebook/sam2.1-hiera-large"
#: SAM2 reads JPEG folders; frames from other sources are written at this quality.
JPEG_QUALITY = 95


def _import_sam2() -> Any:
    try:
        import sam2.build_sam as build_sam
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the SAM2 tracker needs the `sam2` package: after torch, run "
            "`SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0` (CPU) or "
            "`pip install sam2` (CUDA), or use the weight-free tracker (--tracker classical)"
        ) from exc
    return build_sam


def _is_sam2_jpeg_folder(path: Path) -> bool:
    """True when `path` is a folder of `<int>.jpg` frames, the layout `init_state` reads directly."""
    if not path.is_dir():
        return False
    frames = [p for p in path.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"}]
    return (
        bool(frames)
        and all(p.stem.isdigit() for p in frames)
        and len(frames)
        == sum(1 for p in path.iterdir() if p.is_file() and p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    )


def check_checkpoint_file(checkpoint: str | Path) -> Path:
    """A cheap check before any model is built: the file exists and is in `torch.save`'s zip
    format (what `torch.load(weights_only=True)` reads); anything else is named plainly."""
    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise CheckpointError(f"SAM2 checkpoint not found: {ckpt}")
    if not zipfile.is_zipfile(ckpt):
        raise CheckpointError(f"SAM2 checkpoint {ckpt} is not a torch checkpoint (a torch.save zip file)")
    return ckpt


def sam2_extension_available() -> bool:
    """True when sam2's compiled extension (`sam2._C`, CUDA post-processing) imports."""
    try:
        import sam2._C  # noqa: F401
    except ImportError:
        return False
    return True


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The precision SAM2's authors run it in: bf16 autocast on CUDA (sam2's README and
    notebooks), full fp32 elsewhere (CPU autocast would change the masks and gain nothing)."""
    return torch.bfloat16 if device.type == "cuda" else None


class SAM2Tracker:
    """Wraps a `SAM2VideoPredictor`. Build it with `from_checkpoint` or `from_pretrained`."""

    def __init__(
        self,
        predictor: Any,
        *,
        offload_video_to_cpu: bool = True,
        offload_state_to_cpu: bool = False,
        mask_threshold: float = 0.0,
        stream_frames: bool = True,
        frames_in_memory: int = 4,
    ) -> None:
        """`stream_frames`: read frames on demand and drop per-frame memory SAM2 can no longer
        read (same masks; memory no longer grows with the video). Off: sam2's own `init_state`,
        which holds every frame at the model's input size (about 12.6 MB a frame at 1024).
        `frames_in_memory`: how many input frames the lazy reader keeps."""
        self.predictor = predictor
        self.stream_frames = stream_frames
        self.frames_in_memory = frames_in_memory
        self.offload_video_to_cpu = offload_video_to_cpu
        self.offload_state_to_cpu = offload_state_to_cpu
        self.mask_threshold = mask_threshold
        self._lock = threading.Lock()  # one propagation at a time: concurrent runs share the model

    @property
    def name(self) -> str:
        return "sam2"

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        config: str = DEFAULT_SAM2_CONFIG,
        *,
        device: str | None = None,
        image_size: int | None = None,
        offload_video_to_cpu: bool = True,
        offload_state_to_cpu: bool = False,
        stream_frames: bool = True,
        frames_in_memory: int = 4,
        hydra_overrides: Sequence[str] = (),
    ) -> SAM2Tracker:
        """Build the predictor from a config name (e.g. `configs/sam2.1/sam2.1_hiera_l.yaml`) and a
        checkpoint file (e.g. `sam2.1_hiera_large.pt`), loading it strictly.

        `image_size` lowers the model's input resolution (default 1024) to save memory and time;
        `hydra_overrides` (e.g. `++model.image_encoder.trunk.embed_dim=8`) change the config the
        way sam2's own `hydra_overrides_extra` does, for checkpoints of a variant architecture.
        """
        build_sam = _import_sam2()
        ckpt = check_checkpoint_file(checkpoint)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
        overrides += list(hydra_overrides)
        try:
            predictor = build_sam.build_sam2_video_predictor(
                config, str(ckpt), device=device, hydra_overrides_extra=overrides
            )
        except torch.cuda.OutOfMemoryError as exc:  # a RuntimeError too: must not read as a mismatch
            raise ResourceError(
                f"out of {device} memory while loading SAM2 {config} from {ckpt}: {exc}. "
                "Free the GPU, choose a smaller model (e.g. sam2.1_hiera_t) or --sam2-image-size"
            ) from exc
        except RuntimeError as exc:  # load_state_dict (strict) and sam2's own check raise this
            raise CheckpointError(
                f"SAM2 checkpoint {ckpt} does not match config {config}: {exc or 'missing/unexpected keys'}"
            ) from exc
        except Exception as exc:
            if type(exc).__name__ in {"MissingConfigException", "ConfigCompositionException"}:
                raise CheckpointError(f"unknown SAM2 config {config!r}: {exc}") from exc
            raise
        if not (sam2_extension_available() and str(device).startswith("cuda")):
            # sam2's hole filling (fill_hole_area, 8 px in its configs) needs its compiled CUDA
            # extension; without it sam2 warns and skips it, so skip it quietly. With the
            # extension on a GPU the authors' default stays.
            predictor.fill_hole_area = 0
        logger.info("loaded SAM2 %s from %s on %s", config, ckpt, device)
        return cls(
            predictor,
            offload_video_to_cpu=offload_video_to_cpu,
            offload_state_to_cpu=offload_state_to_cpu,
            stream_frames=stream_frames,
            frames_in_memory=frames_in_memory,
        )

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_SAM2_HUB_ID, **kwargs: Any) -> SAM2Tracker:
        """Download a released checkpoint from the Hugging Face hub (e.g. `facebook/sam2.1-hiera-large`)."""
        build_sam = _import_sam2()
        from huggingface_hub import hf_hub_download

        if model_id not in build_sam.HF_MODEL_ID_TO_FILENAMES:
            raise CheckpointError(
                f"unknown SAM2 hub id {model_id!r}; known: {sorted(build_sam.HF_MODEL_ID_TO_FILENAMES)}"
            )
        config, filename = build_sam.HF_MODEL_ID_TO_FILENAMES[model_id]
        from revseg_agent.hub import require_hub_or_cache

        require_hub_or_cache(model_id, filename, what="SAM2 checkpoint")
        path = hf_hub_download(repo_id=model_id, filename=filename)
        return cls.from_checkpoint(path, config, **kwargs)

    def work_units(self, video: Video) -> int:
        return video.num_frames + 1  # forward from the keyframe, then backward from it

    def _frames_source(self, video: Video, tmp: Path) -> str:
        if _is_sam2_jpeg_folder(video.path):
            return str(video.path)
        tmp.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(video.iter_frames()):
            ok = cv2.imwrite(
                str(tmp / f"{i:05d}.jpg"),
                cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
            )
            if not ok:
                raise OSError(f"cannot write a frame to {tmp}")
        return str(tmp)

    def track(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> MaskTrack:
        frames = self.stream(video, frame_index=frame_index, boxes=boxes, progress=progress)
        return collect_track(frames, video, len(boxes))

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.predictor, "device", "cpu"))

    def memory_window(self) -> int:
        """How many frames back (in the direction of propagation) SAM2 can still read a frame's
        memory: its mask memories (`num_maskmem` frames, `memory_temporal_stride_for_eval`
        apart) and its object pointers (`max_obj_ptrs_in_encoder` frames); one frame of slack."""
        model = self.predictor
        stride = int(getattr(model, "memory_temporal_stride_for_eval", 1))
        return max(int(model.num_maskmem) * stride, int(model.max_obj_ptrs_in_encoder)) + 1

    def stream(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> Iterator[FrameMasks]:
        """Masks frame by frame: the keyframe, forward to the end, then backward to frame 0.

        With `stream_frames` (the default) frames are read on demand and a frame's memory is
        dropped once no later frame can attend to it (`memory_window`); the keyframe's, SAM2's
        conditioning frame, is kept throughout. One propagation at a time per tracker: the
        lock is held until the stream is exhausted or closed."""
        prompt = TrackPrompt(frame_index, tuple(boxes))
        for _, masks in self.stream_group(video, [prompt], progress=progress):
            yield masks

    def stream_group(
        self,
        video: Video,
        prompts: Sequence[TrackPrompt],
        *,
        progress: ProgressCallback | None = None,
    ) -> Iterator[tuple[int, FrameMasks]]:
        """Several prompts on one video (the expressions of a video, each with its own keyframe
        and boxes) in one pass: `(prompt index, FrameMasks)` as they are made. Each prompt keeps
        its own SAM2 session, so its masks equal `stream` with that prompt alone; what they share
        is the image encoder, run once per frame for all of them (SAM2 caches a frame's features
        in its session; the others are handed that cache before they step onto the frame).
        Forward from the earliest keyframe to the end, then backward from the latest to frame 0;
        each prompt joins at its keyframe. `progress` counts frames of the two passes."""
        for prompt in prompts:
            check_prompt(video, prompt.frame_index, prompt.boxes)
        if not prompts:
            return
        with self._lock:
            yield from _outside_contexts(self._stream_group(video, prompts, progress), self._contexts)

    def _contexts(self) -> contextlib.ExitStack:
        """inference mode and SAM2's precision, entered around each step of the stream only, so
        the caller's code between frames never runs under them."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        dtype = autocast_dtype(self.device)
        stack.enter_context(torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None))
        return stack

    def _stream_group(
        self, video: Video, prompts: Sequence[TrackPrompt], progress: ProgressCallback | None
    ) -> Generator[tuple[int, FrameMasks], None, None]:
        with tempfile.TemporaryDirectory(prefix="revseg-sam2-") as tmp:
            source = self._frames_source(video, Path(tmp) / "frames")
            states: list[dict[str, Any]] = []
            try:
                for prompt in prompts:
                    state = self._init_state(
                        source, Path(tmp), images=states[0]["images"] if states else None
                    )
                    states.append(state)
                    for obj_id, box in enumerate(prompt.boxes, start=1):
                        self.predictor.add_new_points_or_box(
                            state,
                            frame_idx=prompt.frame_index,
                            obj_id=obj_id,
                            box=np.array(box.to_list(), np.float32),
                        )
                window = self.memory_window()
                keyframes = [p.frame_index for p in prompts]
                for reverse in (False, True):
                    yield from self._one_pass(video, states, keyframes, reverse, window, progress)
            finally:
                for state in states:
                    self.predictor.reset_state(state)

    def _one_pass(
        self,
        video: Video,
        states: list[dict[str, Any]],
        keyframes: list[int],
        reverse: bool,
        window: int,
        progress: ProgressCallback | None,
    ) -> Generator[tuple[int, FrameMasks], None, None]:
        """One direction for every session, frame by frame in lockstep."""
        runs = [
            self.predictor.propagate_in_video(state, start_frame_idx=key, reverse=reverse)
            for state, key in zip(states, keyframes, strict=True)
        ]
        frames = range(max(keyframes), -1, -1) if reverse else range(min(keyframes), video.num_frames)
        try:
            for idx in frames:
                features: dict[int, Any] | None = None
                for k, (state, run, key) in enumerate(zip(states, runs, keyframes, strict=True)):
                    if (idx > key or key == 0) if reverse else (idx < key):
                        continue  # a pass starts at its keyframe (sam2 has none backward from 0)
                    if features is not None and idx in features:
                        state["cached_features"] = dict(features)  # the encoder ran once here
                    done, obj_ids, logits = next(run)
                    if int(done) != idx:
                        raise AssertionError(f"sam2 stepped to frame {done}, expected {idx}")
                    features = state["cached_features"]
                    if self.stream_frames:
                        _drop_unreachable_memory(state, key, idx, reverse, window)
                    if not (reverse and idx == key):  # sam2 gives the keyframe twice
                        masks = (logits > self.mask_threshold).cpu().numpy()[:, 0]
                        yield k, FrameMasks(idx, {int(o): masks[j] for j, o in enumerate(obj_ids)})
                if progress is not None:
                    progress(1)
        finally:
            for run in runs:
                run.close()

    def _init_state(self, source: str, tmp: Path, *, images: Any = None) -> dict[str, Any]:
        """SAM2's `init_state`; with `stream_frames`, built on the first frame alone and then
        given a lazy `images` sequence for the whole video (sam2's own per-frame loader).
        `images`: another session's frames of the same video, shared (read once)."""
        offload = {
            "offload_video_to_cpu": self.offload_video_to_cpu,
            "offload_state_to_cpu": self.offload_state_to_cpu,
        }
        if images is not None:
            head = Path(tempfile.mkdtemp(prefix="first-frame-", dir=tmp))
            first = sorted(Path(source).glob("*.jpg"))[0]
            shutil.copyfile(first, head / first.name)
            state = dict(self.predictor.init_state(str(head), **offload))
            state["images"] = images
            state["num_frames"] = len(images)
            return state
        if not self.stream_frames:
            return dict(self.predictor.init_state(source, **offload))
        frames = LazyFrames.from_folder(
            Path(source),
            image_size=int(self.predictor.image_size),
            device=self.device,
            offload_video_to_cpu=self.offload_video_to_cpu,
            keep=self.frames_in_memory,
        )
        head = tmp / "first-frame"
        head.mkdir()
        shutil.copyfile(frames.paths[0], head / frames.paths[0].name)
        state = dict(self.predictor.init_state(str(head), **offload))
        state["images"] = frames
        state["num_frames"] = len(frames)
        return state


def _outside_contexts(
    steps: Generator[T, None, None], contexts: Callable[[], contextlib.ExitStack]
) -> Iterator[T]:
    """Run each step of a generator inside fresh `contexts` and yield outside them."""
    try:
        while True:
            with contexts():
                try:
                    item = next(steps)
                except StopIteration:
                    return
            yield item
    finally:
        with contexts():
            steps.close()  # the inner generator's clean-up (reset_state) under the same contexts


def _drop_unreachable_memory(
    state: dict[str, Any], keyframe: int, current: int, reverse: bool, window: int
) -> None:
    """Forget the non-conditioning outputs (mask memory, object pointer, low-res mask) of frames
    no later step reads: forward, those more than `window` behind, except the `window` frames
    after the keyframe that the backward pass reads first; backward, those more than `window`
    ahead. Conditioning (prompted) frames are never dropped."""
    for outputs in state["output_dict_per_obj"].values():
        non_cond = outputs["non_cond_frame_outputs"]
        if reverse:
            stale = [j for j in non_cond if j > current + window]
        else:
            stale = [j for j in non_cond if j < current - window and not keyframe <= j <= keyframe + window]
        for j in stale:
            del non_cond[j]


class LazyFrames:
    """SAM2's `images` (normalised `(3, S, S)` float32 tensors, one per frame) read on demand
    from a folder of `<index>.jpg`, keeping the `keep` most recently used.

    Each frame goes through sam2's own `_load_img_as_tensor` and is normalised in float32 as
    `load_video_frames_from_jpg_images` does, so the tensors (and masks) equal the all-frames path.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(
        self,
        paths: list[Path],
        *,
        image_size: int,
        device: torch.device,
        offload_video_to_cpu: bool,
        keep: int,
    ) -> None:
        if not paths:
            raise ValueError("no frames")
        self.paths = paths
        self.image_size = image_size
        self.device = device
        self.offload_video_to_cpu = offload_video_to_cpu
        self.keep = max(1, keep)
        self.loads = 0  # frames read from disk (for tests)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    @classmethod
    def from_folder(cls, folder: Path, **kwargs: Any) -> LazyFrames:
        paths = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg"}), key=lambda p: int(p.stem)
        )
        return cls(paths, **kwargs)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        index = int(index)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        from sam2.utils.misc import _load_img_as_tensor

        img, _, _ = _load_img_as_tensor(str(self.paths[index]), self.image_size)
        img = img.float()  # sam2 stores frames in a float32 tensor before normalising
        if not self.offload_video_to_cpu:
            img = img.to(self.device)
        mean = torch.tensor(self.MEAN, dtype=torch.float32, device=img.device)[:, None, None]
        std = torch.tensor(self.STD, dtype=torch.float32, device=img.device)[:, None, None]
        img -= mean
        img /= std
        self.loads += 1
        self._cache[index] = img
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return img
