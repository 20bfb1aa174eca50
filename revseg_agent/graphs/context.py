"""Run-time context: the live objects and settings nodes reach through `Runtime[Context]`."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from revseg_agent.access import require_within
from revseg_agent.policies.base import Policy, SamplingParams
from revseg_agent.policies.released import DEFAULT_POLICY
from revseg_agent.settings import ChainSettings
from revseg_agent.tools.base import ProgressCallback, Tracker
from revseg_agent.video import FrameCache, Video, open_video

#: Sampling used when an answer did not parse and the node asks again (greedy would repeat it).
RETRY_SAMPLING = SamplingParams(do_sample=True, temperature=1.0, top_p=0.95)
#: Frames a context's own cache keeps: a run reads its sampled frames and a keyframe or two.
CONTEXT_CACHE_FRAMES = 64


@dataclass
class Context(ChainSettings):
    """Injected into every node (LangGraph `context_schema`); swap `policy` / `tracker` here.

    The chain's settings (frames, attempts, decoding, `on_parse_failure`) are `ChainSettings`'s,
    given by keyword: `Context(policy, tracker, num_frames=8)`. A `policy` or `tracker` given as
    a spec string (`specs`) is loaded by the nodes on first use (`registry`).
    """

    policy: Policy | str
    tracker: Tracker | str
    retry_sampling: SamplingParams = RETRY_SAMPLING
    #: Where the tracking node writes its masks (COCO RLE JSON); None: a temporary folder made
    #: when first needed (not at construction: a served graph builds the context on its event
    #: loop, where file-system calls are blocking calls).
    artifacts_dir: Path | None = None
    track_progress: ProgressCallback | None = None
    #: Decoded frames: the nodes of a run (and the G runs of a training group, which share one)
    #: open the video once and decode each frame once, retries included. Bounded (LRU) so a
    #: long-lived context does not grow; None reads from the file each time.
    frame_cache: FrameCache | None = field(
        default_factory=lambda: FrameCache(max_frames=CONTEXT_CACHE_FRAMES)
    )
    #: Folders this run may read videos and local checkpoints from and write artifacts in; None:
    #: anywhere. A served graph sets them from `REVSEG_ALLOWED_DIRS` (`access.py`); every read
    #: is checked, so a path edited into a paused run's state is held to them too.
    allowed_dirs: tuple[str, ...] | None = None

    def attempt_sampling(self, node: str, prompt_key: str, attempt: int) -> SamplingParams:
        """The decoding of a node's `attempt`: `sampling` first; a retry samples with
        `retry_sampling` seeded from the node, `prompt_key` (what the prompt says), the attempt
        and the retry settings' own seed. So a retry does not depend on what the process sampled
        before (a resumed, sharded or served evaluation gives the same answers) and each retry of
        the same prompt draws anew."""
        if attempt == 1:
            return self.sampling
        # one token budget: a retry may write as much as the first attempt, no more
        retry = dataclasses.replace(self.retry_sampling, max_new_tokens=self.sampling.max_new_tokens)
        if not retry.do_sample:
            return retry
        digest = hashlib.sha256(f"{node}\0{prompt_key}\0{attempt}\0{retry.seed}".encode()).digest()
        return dataclasses.replace(retry, seed=int.from_bytes(digest[:4], "little"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.retry_sampling, dict):  # JSON: accept plain values
            self.retry_sampling = SamplingParams(**self.retry_sampling)
        if self.artifacts_dir is not None:
            self.artifacts_dir = Path(self.artifacts_dir)

    def artifacts(self) -> Path:
        """The artifacts folder, made on first use."""
        if self.artifacts_dir is None:
            self.artifacts_dir = Path(tempfile.mkdtemp(prefix="revseg-"))
        else:
            require_within(self.artifacts_dir, self.allowed_dirs, "artifacts_dir")
        return self.artifacts_dir

    def check_readable(self, path: str | Path, what: str = "video") -> None:
        """`InputError` when `allowed_dirs` are set and `path` lies outside them."""
        require_within(path, self.allowed_dirs, what)

    def open_video(self, path: str | Path, *, fps: float | None = None) -> Video:
        self.check_readable(path)
        if self.frame_cache is not None:
            return self.frame_cache.video(path, fps=fps)
        return open_video(path, fps=fps)

    def read_frames(
        self, path: str | Path, indices: list[int], *, fps: float | None = None
    ) -> list[np.ndarray]:
        self.check_readable(path)
        if self.frame_cache is not None:
            return self.frame_cache.read(path, indices, fps=fps)
        return open_video(path, fps=fps).read(indices)


@dataclass(kw_only=True)
class RunSettings(ChainSettings):
    """A run named by specs (`specs`): what the CLI's and the UI's options describe."""

    #: A hub id, a local checkpoint folder, `revseg-tiny`, or `served:<base url>[#<model>]`.
    policy: str = DEFAULT_POLICY
    #: `classical`, `sam2:<checkpoint>[:<config>]` or `sam2-hub:[<hub id>]`.
    tracker: str = "classical"
    #: Where the models run (None: cuda when available).
    device: str | None = None
    #: SAM2's input size (None: the checkpoint's 1024); lower saves memory.
    sam2_image_size: int | None = None

    def context(self, *, load: bool = True, **extra: Any) -> Context:
        """The graph's run-time context: the policy and tracker loaded once per spec (`registry`),
        or with `load=False` left as specs that the nodes load on first use. `extra`: the
        context's own fields (artifacts_dir, track_progress, ...)."""
        from revseg_agent.graphs.registry import load_policy, load_tracker

        policy: Any = load_policy(self.policy, device=self.device) if load else self.policy
        tracker: Any = load_tracker(self.tracker, self.device, self.sam2_image_size) if load else self.tracker
        return Context(policy, tracker, **self.chain_settings(), **extra)


def run_context(runtime_context: Any) -> Context:
    """The `Context` of a run: given directly (Python API), or the one a served graph's JSON
    context builds (`graphs.served.ServedContext.context`)."""
    return runtime_context if isinstance(runtime_context, Context) else runtime_context.context
