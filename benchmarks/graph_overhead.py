"""How much of a run is the graph's own overhead (orchestration + tracing)?

Runs the same work two ways, side by side, with a tiny random-init Qwen2.5-VL and the
weight-free tracker on the generated demo clip:
  graph:  build_graph().invoke(...) — LangGraph, trace records, mask JSON;
  direct: the same policy calls, parsing and tracking as straight-line code, no graph, no trace.
Reports the median over repetitions, the share of the graph run spent outside the policy and
tracker, and the graph-vs-direct difference as a share of the graph run (the goal: under 5%).

Usage: python benchmarks/graph_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from revseg_agent.graphs.chats import KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.parsing import parse_box_answer, parse_keyframe_answer
from revseg_agent.policies.base import (
    ChatMessage,
    Generation,
    ImageFrame,
    SamplingParams,
    VideoFrames,
)
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl
from revseg_agent.synth.square_clip import make_demo_clip
from revseg_agent.tools.base import Tracker
from revseg_agent.tools.classical import ClassicalTracker
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video, open_video


class TimedPolicy:
    def __init__(self, inner: QwenVLPolicy) -> None:
        self.inner, self.seconds = inner, 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, VideoFrames | ImageFrame],
        *,
        sampling: SamplingParams,
        n: int = 1,
    ) -> list[Generation]:
        start = time.perf_counter()
        try:
            return self.inner.generate(messages, visuals, sampling=sampling, n=n)
        finally:
            self.seconds += time.perf_counter() - start


class TimedTracker:
    def __init__(self, inner: Tracker) -> None:
        self.inner, self.seconds = inner, 0.0

    @property
    def name(self) -> str:
        return self.inner.name

    def work_units(self, video: Video) -> int:
        return self.inner.work_units(video)

    def track(self, video: Video, **kwargs: object) -> MaskTrack:
        start = time.perf_counter()
        try:
            return self.inner.track(video, **kwargs)  # type: ignore[arg-type]
        finally:
            self.seconds += time.perf_counter() - start


def direct_run(
    policy: TimedPolicy, tracker: TimedTracker, clip: Path, query: str, sampling: SamplingParams
) -> None:
    """The chain as plain code: what the graph would cost with zero orchestration and tracing."""
    video = open_video(clip)
    sample = video.sample(16)
    frames = VideoFrames(video.read(sample.indices), list(sample.indices), video.info.fps, video.num_frames)
    gen = policy.generate(round1_messages(query, sample.timestamps), {"frames": frames}, sampling=sampling)[0]
    answer = parse_keyframe_answer(gen.text, len(sample))
    position = getattr(answer, "position", len(sample) // 2)
    key = sample.indices[position]
    description = getattr(answer, "description", query)
    ask = round2_messages(description)
    policy.generate(ask, {KEYFRAME_REF: ImageFrame(video.frame(key))}, sampling=sampling)
    parse_box_answer(gen.text)
    h, w = video.info.height, video.info.width
    tracker.track(video, frame_index=key, boxes=[Box(w / 4, h / 4, 3 * w / 4, 3 * h / 4)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="revseg-bench-"))
    clip = make_demo_clip(work / "clip.mp4")
    policy = TimedPolicy(QwenVLPolicy.from_pretrained(build_tiny_qwen2_5_vl(work / "tiny"), device="cpu"))
    tracker = TimedTracker(ClassicalTracker())
    sampling = SamplingParams(max_new_tokens=32)
    context = Context(
        policy=policy,
        tracker=tracker,
        max_attempts=1,
        on_parse_failure="fallback",
        round2_with_history=False,
        sampling=sampling,
        artifacts_dir=work,
    )
    graph = build_graph()
    query = "the red square that moves right"
    rows: dict[str, list[tuple[float, float]]] = {"graph": [], "direct": []}
    for _ in range(args.repeats + 1):  # the first round warms caches and is dropped
        for kind in ("graph", "direct"):
            policy.seconds = tracker.seconds = 0.0
            start = time.perf_counter()
            if kind == "graph":
                graph.invoke({"video_path": str(clip), "query": query}, context=context)
            else:
                direct_run(policy, tracker, clip, query, sampling)
            total = time.perf_counter() - start
            rows[kind].append((total, policy.seconds + tracker.seconds))
    for kind in rows:
        rows[kind] = rows[kind][1:]
    graph_total = statistics.median(t for t, _ in rows["graph"])
    graph_models = statistics.median(m for _, m in rows["graph"])
    direct_total = statistics.median(t for t, _ in rows["direct"])
    print(f"{'run':<8} {'total ms':>9} {'policy+tracker ms':>18}")
    for kind in rows:
        print(
            f"{kind:<8} {1000 * statistics.median(t for t, _ in rows[kind]):>9.1f} "
            f"{1000 * statistics.median(m for _, m in rows[kind]):>18.1f}"
        )
    print(
        f"graph time outside policy and tracker: {100 * (graph_total - graph_models) / graph_total:.2f}%"
        " (video decoding for the prompts, trace records, mask JSON, orchestration)"
    )
    print(
        f"graph overhead vs direct code: {100 * (graph_total - direct_total) / graph_total:.2f}% (goal < 5%)"
    )


if __name__ == "__main__":
    main()
