"""Runs a person steps through: the graph with a SQLite checkpointer, paused after every node.

This is the browser UI's model, kept free of Gradio so it can be driven and tested directly:
`start` opens a run (a LangGraph thread) and runs its first node, `step` runs the next node,
`run` goes on to the end, `edit` changes the keyframe, the description or the boxes between
nodes (checked and recorded as human edits, `graphs.edits`), `view` says what the run has
produced so far as files a page can show. Each run's files live in `<work>/runs/<run id>/`;
runs survive a restart (the checkpointer's SQLite file and `run.json`) and are reopened by id.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revseg_agent.access import require_within
from revseg_agent.app.outputs import write_outputs
from revseg_agent.errors import InputError
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.edits import apply_edit
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.names import NODES, SEMANTIC_INTERPRETATION, TRACK
from revseg_agent.graphs.registry import resolve_policy, resolve_tracker, run_names
from revseg_agent.graphs.traces import Trace
from revseg_agent.io import atomic_write_text, safe_name
from revseg_agent.masks_io import BOX_RGB, Masks, overlay_frame, read_masks_json
from revseg_agent.policies.base import Policy
from revseg_agent.settings import ChainSettings, OnParseFailure
from revseg_agent.tools.base import Tracker
from revseg_agent.types import Box
from revseg_agent.video import DEFAULT_NUM_FRAMES, open_video

logger = logging.getLogger(__name__)

#: Long side of the thumbnails in the frame strip and of the page's overlay video (pixels).
THUMB_SIZE = 240
VIEW_SIZE = 640
#: At most this many overlay stills in the page's per-frame gallery (spread over the video).
GALLERY_FRAMES = 12
KEYFRAME_RGB = (230, 40, 40)

#: What each stage means for the person looking at it.
STAGES = {
    "ready": "the video is opened and frames are sampled: next, round 1 (semantic interpretation)",
    "round 1": "round 1 answered: next, the keyframe is mapped to the video",
    "keyframe": "keyframe chosen: change it or the description, then run round 2 (spatial grounding)",
    "box": "box drawn on the keyframe: change it, then track",
    "tracked": "masks on every frame: download them below",
    "failed": "the chain stopped with an error (see the message)",
}

PolicyLike = Policy | str
TrackerLike = Tracker | str
ProgressFn = Callable[[int, int], None]


@dataclass
class RunInfo:
    """What a run was started with (saved as `run.json` beside its files)."""

    run_id: str
    video: str
    query: str
    policy: str
    tracker: str
    created: float


@dataclass
class RunView:
    """A run as a page shows it: text, and paths of images and files written for it."""

    run_id: str
    stage: str
    stage_help: str
    next_nodes: list[str]
    query: str
    video: str
    policy: str
    tracker: str
    num_frames: int | None = None
    fps: float | None = None
    frame_size: list[int] | None = None
    #: (thumbnail path, caption) of each sampled frame; the keyframe's has a red border.
    strip: list[tuple[str, str]] = field(default_factory=list)
    sampled_indices: list[int] = field(default_factory=list)
    keyframe_index: int | None = None
    keyframe_position: int | None = None
    description: str | None = None
    thinking: str | None = None
    answer: str | None = None
    keyframe_image: str | None = None
    boxes: list[list[float]] | None = None
    overlay_video: str | None = None
    overlay_frames: list[tuple[str, str]] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    edits: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RunBook:
    """The runs of one UI server. Thread-safe: each run has its own lock, so two requests on
    one run take turns and requests on different runs (other people's sessions) run side by side.
    """

    def __init__(
        self,
        work_dir: str | Path,
        *,
        policies: Mapping[str, PolicyLike],
        trackers: Mapping[str, TrackerLike],
        num_frames: int = DEFAULT_NUM_FRAMES,
        max_attempts: int = 3,
        on_parse_failure: OnParseFailure = "fallback",
        allowed_dirs: Sequence[str | Path] | None = None,
    ) -> None:
        """`allowed_dirs`: the only folders (besides `work_dir`) a run's video may come from; None:
        anywhere (a page on loopback, for the machine's own user)."""
        from langgraph.checkpoint.sqlite import SqliteSaver

        if not policies or not trackers:
            raise ValueError("the UI needs at least one policy and one tracker")
        self.work_dir = Path(work_dir).resolve()
        (self.work_dir / "runs").mkdir(parents=True, exist_ok=True)
        self.policies = dict(policies)
        self.trackers = dict(trackers)
        #: How every run of the page runs the chain.
        self.chain = ChainSettings(
            num_frames=num_frames, max_attempts=max_attempts, on_parse_failure=on_parse_failure
        )
        self.allowed_dirs: list[str] | None = (
            None if allowed_dirs is None else [str(self.work_dir), *map(str, allowed_dirs)]
        )
        self._conn = sqlite3.connect(self.work_dir / "runs.sqlite", check_same_thread=False)
        self.graph = build_graph(checkpointer=SqliteSaver(self._conn), interrupt_after=list(NODES))
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    # -- runs --------------------------------------------------------------------------------
    def start(
        self, video: str | Path, query: str, *, policy: str, tracker: str, progress: ProgressFn | None = None
    ) -> RunView:
        """Open a run and run its first node. Bad input raises `InputError` / `VideoError`."""
        if not query or not query.strip():
            raise InputError("the query is empty")
        if policy not in self.policies:
            raise InputError(f"unknown policy {policy!r}; choose one of {', '.join(self.policies)}")
        if tracker not in self.trackers:
            raise InputError(f"unknown tracker {tracker!r}; choose one of {', '.join(self.trackers)}")
        if not video or not str(video).strip():
            raise InputError("no video: upload a file, give a path or pick a generated clip")
        source = Path(video).expanduser()
        require_within(source, self.allowed_dirs, "video")
        open_video(source)  # VideoError with the reason when it cannot be read
        run_id = uuid.uuid4().hex[:16]
        folder = self._folder(run_id)
        folder.mkdir(parents=True)
        if source.is_file():  # uploads live in a temporary folder the server cleans: keep a copy
            kept = folder / f"input{source.suffix.lower()}"
            shutil.copyfile(source, kept)
            source = kept
        info = RunInfo(run_id, str(source.resolve()), query.strip(), policy, tracker, time.time())
        atomic_write_text(folder / "run.json", json.dumps(asdict(info), indent=2))
        with self._lock(run_id):
            self._advance(info, {"video_path": info.video, "query": info.query}, nodes=1, progress=progress)
            return self._view(info)

    def step(self, run_id: str, *, progress: ProgressFn | None = None) -> RunView:
        """Run the next node (nothing when the run has ended)."""
        info = self.info(run_id)
        with self._lock(run_id):
            self._advance(info, None, nodes=1, progress=progress)
            return self._view(info)

    def run(self, run_id: str, *, progress: ProgressFn | None = None) -> RunView:
        """Run every remaining node."""
        info = self.info(run_id)
        with self._lock(run_id):
            self._advance(info, None, nodes=len(NODES) * (self.chain.max_attempts + 1), progress=progress)
            return self._view(info)

    def edit(self, run_id: str, key: str, value: Any) -> RunView:
        """Change the keyframe, the description or the boxes of a paused run (`InputError` when
        the value does not fit the run, or the run has ended)."""
        info = self.info(run_id)
        with self._lock(run_id):
            snapshot = self.graph.get_state(self._config(run_id))
            if not snapshot.next:
                raise InputError("the run has ended: start a new one to change it")
            if key == "boxes" and TRACK not in snapshot.next:
                raise InputError("the box can be changed once round 2 has drawn one, before tracking")
            apply_edit(self.graph, self._config(run_id), key, value)
            return self._view(info)

    def view(self, run_id: str) -> RunView:
        info = self.info(run_id)
        with self._lock(run_id):
            return self._view(info)

    def info(self, run_id: str) -> RunInfo:
        """A run's `run.json` (`InputError` for an unknown or malformed id)."""
        if not run_id or safe_name(run_id) != run_id:
            raise InputError(f"no run {run_id!r}")
        path = self._folder(run_id) / "run.json"
        if not path.is_file():
            raise InputError(f"no run {run_id!r} in {self.work_dir}")
        return RunInfo(**json.loads(path.read_text(encoding="utf-8")))

    def runs(self) -> list[RunInfo]:
        """Every saved run, newest first."""
        infos = []
        for path in (self.work_dir / "runs").glob("*/run.json"):
            try:
                infos.append(RunInfo(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError):
                logger.warning("skipping unreadable %s", path)
        return sorted(infos, key=lambda r: r.created, reverse=True)

    # -- internals -----------------------------------------------------------------------------
    def _folder(self, run_id: str) -> Path:
        return self.work_dir / "runs" / run_id

    def _lock(self, run_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(run_id, threading.Lock())

    @staticmethod
    def _config(run_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": run_id}}

    def _context(self, info: RunInfo, progress: ProgressFn | None) -> Context:
        tracker = resolve_tracker(self.trackers[info.tracker])
        done = {"n": 0, "total": 0}

        def track_progress(n: int) -> None:
            if not done["total"]:  # once per run, not per frame: it opens the video
                done["total"] = tracker.work_units(open_video(info.video))
            done["n"] += n
            if progress is not None:
                progress(done["n"], done["total"])

        return Context(
            policy=resolve_policy(self.policies[info.policy]),
            tracker=tracker,
            **self.chain.chain_settings(),
            artifacts_dir=self._folder(info.run_id) / "artifacts",
            track_progress=track_progress,
        )

    def _advance(
        self, info: RunInfo, inputs: dict[str, Any] | None, *, nodes: int, progress: ProgressFn | None
    ) -> None:
        config = self._config(info.run_id)
        context = self._context(info, progress)
        for _ in range(nodes):
            if inputs is None and not self.graph.get_state(config).next:
                break
            for _update in self.graph.stream(inputs, config, context=context, stream_mode="updates"):
                pass
            inputs = None
        snapshot = self.graph.get_state(config)
        state = snapshot.values
        if not snapshot.next and state.get("masks_path") and not state.get("error"):
            self._write_outputs(info, state)

    def _trace(self, info: RunInfo, state: dict[str, Any]) -> Trace:
        policy, tracker = run_names(self.policies[info.policy], self.trackers[info.tracker])
        return Trace.from_state(state, policy=policy, tracker=tracker)

    def _write_outputs(self, info: RunInfo, state: dict[str, Any]) -> None:
        """`revseg segment`'s outputs (masks/, masks.json, overlay.mp4, trace.json), then the
        page's overlay video (VP8 WebM, which browsers play) and stills."""
        folder = self._folder(info.run_id)
        video = open_video(info.video)
        trace = self._trace(info, state)
        masks = read_masks_json(state["masks_path"])
        write_outputs(
            folder / "outputs",
            video=video,
            track=masks,
            trace=trace,
            masks_json=state["masks_path"],
            overwrite=True,
        )
        view = folder / "view"
        view.mkdir(exist_ok=True)
        _write_browser_video(view / "overlay.webm", video, masks)
        picks = sorted(
            {int(i) for i in np.linspace(0, video.num_frames - 1, min(GALLERY_FRAMES, video.num_frames))}
        )
        for i, frame in zip(picks, video.read(picks), strict=True):
            _write_image(view / f"mask-{i:05d}.png", _fit(overlay_frame(frame, masks.frame(i)), VIEW_SIZE))

    def _view(self, info: RunInfo) -> RunView:
        snapshot = self.graph.get_state(self._config(info.run_id))
        state: dict[str, Any] = dict(snapshot.values)
        nxt = list(snapshot.next)
        error = state.get("error")
        stage = _stage(state, nxt)
        view = RunView(
            run_id=info.run_id,
            stage=stage,
            stage_help=STAGES[stage],
            next_nodes=nxt,
            query=info.query,
            video=info.video,
            policy=info.policy,
            tracker=info.tracker,
            num_frames=state.get("num_video_frames"),
            fps=state.get("fps"),
            frame_size=state.get("frame_size"),
            sampled_indices=list(state.get("sampled_indices") or []),
            keyframe_index=state.get("keyframe_index"),
            keyframe_position=state.get("keyframe_position"),
            description=state.get("description"),
            boxes=state.get("boxes"),
            edits=list(state.get("human_edits") or []),
            error=f"{error['node']}: {error['message']}" if error else None,
        )
        folder = self._folder(info.run_id) / "view"
        folder.mkdir(parents=True, exist_ok=True)
        round1 = [s for s in state.get("steps", []) if s["node"] == SEMANTIC_INTERPRETATION]
        if round1:
            view.answer = round1[-1].get("completion")
            view.thinking = (round1[-1].get("parsed") or {}).get("think")
        if view.sampled_indices:
            view.strip = self._strip(info, state, folder)
        if view.keyframe_index is not None and view.num_frames and 0 <= view.keyframe_index < view.num_frames:
            view.keyframe_image = self._keyframe_image(info, state, folder)
        outputs = self._folder(info.run_id) / "outputs"
        if stage == "tracked" and outputs.is_dir():
            view.downloads = [str(outputs / name) for name in ("masks.json", "overlay.mp4", "trace.json")]
            webm = folder / "overlay.webm"
            view.overlay_video = str(webm) if webm.is_file() else None
            view.overlay_frames = [
                (str(p), f"frame {int(p.stem.split('-')[1])}") for p in sorted(folder.glob("mask-*.png"))
            ]
        return view

    def _strip(self, info: RunInfo, state: dict[str, Any], folder: Path) -> list[tuple[str, str]]:
        video = open_video(info.video, fps=state.get("fps"))
        key = state.get("keyframe_index")
        strip = []
        indices = state["sampled_indices"]
        times = state.get("sampled_timestamps") or [i / video.info.fps for i in indices]
        for k, (index, frame) in enumerate(zip(indices, video.read(indices), strict=True)):
            chosen = index == key
            thumb = _fit(frame, THUMB_SIZE)
            if chosen:
                cv2.rectangle(thumb, (0, 0), (thumb.shape[1] - 1, thumb.shape[0] - 1), KEYFRAME_RGB, 6)
            path = folder / f"strip-{index:05d}{'-key' if chosen else ''}.png"
            if not path.is_file():
                _write_image(path, thumb)
            caption = f"id {k + 1} · frame {index} · {times[k]:.2f} s{' · KEYFRAME' if chosen else ''}"
            strip.append((str(path), caption))
        return strip

    def _keyframe_image(self, info: RunInfo, state: dict[str, Any], folder: Path) -> str:
        key = int(state["keyframe_index"])
        frame = open_video(info.video, fps=state.get("fps")).frame(key)
        boxes = [Box.from_list(b) for b in state.get("boxes") or []]
        tag = "-".join(f"{v:.0f}" for b in boxes for v in b.to_list()) or "nobox"
        path = folder / f"keyframe-{key:05d}-{tag}.png"
        if not path.is_file():  # full resolution: a click on it is a pixel of the frame
            _write_image(path, overlay_frame(frame, np.zeros(frame.shape[:2], bool), boxes))
        return str(path)


def _stage(state: dict[str, Any], nxt: list[str]) -> str:
    if state.get("error"):
        return "failed"
    if not nxt:
        return "tracked" if state.get("masks_path") else "failed"
    if TRACK in nxt:
        return "box"
    if state.get("keyframe_index") is not None:
        return "keyframe"
    if state.get("keyframe_position") is not None:
        return "round 1"
    return "ready"


def _fit(frame: np.ndarray, long_side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = min(1.0, long_side / max(h, w))
    if scale == 1.0:
        return frame.copy()
    return cv2.resize(
        frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )


def _write_image(path: Path, rgb: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    tmp.replace(path)


def _write_browser_video(path: Path, video: Any, masks: Masks) -> bool:
    """The overlay as VP8 WebM (what browsers play; OpenCV's mp4v is not). False, and no file,
    where this OpenCV build has no VP8 encoder (the stills still show)."""
    h, w = video.info.height, video.info.width
    scale = min(1.0, VIEW_SIZE / max(h, w))
    size = (max(2, round(w * scale) // 2 * 2), max(2, round(h * scale) // 2 * 2))
    tmp = path.with_name(f".{path.stem}.tmp.webm")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"VP80"), video.info.fps, size)
    if not writer.isOpened():
        logger.info("this OpenCV cannot encode VP8: the page shows overlay stills only")
        return False
    try:
        for i, frame in enumerate(video.iter_frames()):
            shown = cv2.resize(overlay_frame(frame, masks.frame(i)), size, interpolation=cv2.INTER_AREA)
            writer.write(cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    tmp.replace(path)
    return True


__all__ = ["BOX_RGB", "STAGES", "RunBook", "RunInfo", "RunView"]
