"""SAM2 (the `sam2` package) as a `Tracker`: a box prompt on the keyframe, propagated both ways.

Loading is strict: the checkpoint must be `{"model": state_dict}` matching the config exactly,
read with `torch.load(weights_only=True)` (what `sam2.build_sam` does). The `sam2` package is
imported lazily because importing it initialises Hydra for the whole process.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from revseg_agent.errors import CheckpointError, ResourceError
from revseg_agent.tools.base import ProgressCallback, check_prompt
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video

logger = logging.getLogger(__name__)

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
    ) -> None:
        self.predictor = predictor
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
    ) -> SAM2Tracker:
        """Build the predictor from a config name (e.g. `configs/sam2.1/sam2.1_hiera_l.yaml`) and a
        checkpoint file (e.g. `sam2.1_hiera_large.pt`), loading it strictly.

        `image_size` lowers the model's input resolution (default 1024) to save memory and time.
        """
        build_sam = _import_sam2()
        ckpt = check_checkpoint_file(checkpoint)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
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
            predictor, offload_video_to_cpu=offload_video_to_cpu, offload_state_to_cpu=offload_state_to_cpu
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
        check_prompt(video, frame_index, boxes)
        with self._lock:
            return self._track(video, frame_index=frame_index, boxes=boxes, progress=progress)

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.predictor, "device", "cpu"))

    @torch.inference_mode()
    def _track(
        self,
        video: Video,
        *,
        frame_index: int,
        boxes: Sequence[Box],
        progress: ProgressCallback | None = None,
    ) -> MaskTrack:
        n, h, w = video.num_frames, video.info.height, video.info.width
        per_object = {obj: np.zeros((n, h, w), dtype=bool) for obj in range(1, len(boxes) + 1)}
        dtype = autocast_dtype(self.device)
        with (
            tempfile.TemporaryDirectory(prefix="revseg-sam2-") as tmp,
            torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None),
        ):
            source = self._frames_source(video, Path(tmp))
            state = self.predictor.init_state(
                source,
                offload_video_to_cpu=self.offload_video_to_cpu,
                offload_state_to_cpu=self.offload_state_to_cpu,
            )
            try:
                for obj_id, box in enumerate(boxes, start=1):
                    self.predictor.add_new_points_or_box(
                        state, frame_idx=frame_index, obj_id=obj_id, box=np.array(box.to_list(), np.float32)
                    )
                for reverse in (False, True):
                    for idx, obj_ids, logits in self.predictor.propagate_in_video(
                        state, start_frame_idx=frame_index, reverse=reverse
                    ):
                        masks = (logits > self.mask_threshold).cpu().numpy()[:, 0]
                        for k, obj_id in enumerate(obj_ids):
                            per_object[int(obj_id)][idx] = masks[k]
                        if progress is not None:
                            progress(1)
            finally:
                self.predictor.reset_state(state)
        return MaskTrack.from_objects(per_object)
