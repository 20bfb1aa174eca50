"""Test doubles for the two swap points, shipped beside them (as httpx ships `MockTransport`).

`ScriptedPolicy` answers from a script instead of a model; `BoxTracker` fills the prompted box on
every frame instead of tracking. They let you test graphs, retries and interrupts without
weights. They are never used by the library itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from revseg_agent.policies.base import GREEDY, ChatMessage, Generation, ImageFrame, SamplingParams, Visual
from revseg_agent.tools.base import ProgressCallback, TrackPrompt
from revseg_agent.types import Box, FrameMasks, MaskTrack
from revseg_agent.video import Video


@dataclass
class ScriptedCall:
    messages: list[ChatMessage]
    visual_refs: list[str]
    sampling: SamplingParams
    n: int


@dataclass
class ScriptedPolicy:
    """Replies with `replies` in order (or `reply(messages)` when given; every one of `n` samples
    gets that reply); with `sample_reply(messages, sampling, i)` sample `i` of a call gets its
    own reply, as from a sampled model. Records every chat in `calls` and every model call in
    `model_calls` as (kind, rows): ("generate", n) or ("batch", chats), to test how callers batch.

    Image sizes are reported as the images' own sizes, so box answers are in frame pixels.
    """

    replies: Sequence[str] = ()
    reply: Callable[[Sequence[ChatMessage]], str] | None = None
    sample_reply: Callable[[Sequence[ChatMessage], SamplingParams, int], str] | None = None
    calls: list[ScriptedCall] = field(default_factory=list)
    model_calls: list[tuple[str, int]] = field(default_factory=list)
    _in_batch: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return "scripted"

    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = GREEDY,
        n: int = 1,
    ) -> list[Generation]:
        if not self._in_batch:
            self.model_calls.append(("generate", n))
        index = len(self.calls)
        self.calls.append(ScriptedCall(list(messages), list(visuals), sampling, n))
        if self.sample_reply is not None:
            texts = [self.sample_reply(messages, sampling, i) for i in range(n)]
        elif self.reply is not None:
            texts = [self.reply(messages)] * n
        elif index < len(self.replies):
            texts = [self.replies[index]] * n
        else:
            raise AssertionError(f"ScriptedPolicy has no reply #{index + 1} (script has {len(self.replies)})")
        sizes = [tuple(v.pixels.shape[:2]) for v in visuals.values() if isinstance(v, ImageFrame)]
        return [
            Generation(
                text=text,
                prompt_ids=[1, 2, 3],
                completion_ids=[ord(c) % 256 for c in text],
                logprobs=[-0.5] * len(text),
                image_sizes=[(int(h), int(w)) for h, w in sizes],
            )
            for text in texts
        ]

    def generate_batch(
        self,
        requests: Sequence[tuple[Sequence[ChatMessage], Mapping[str, Visual]]],
        *,
        sampling: SamplingParams = GREEDY,
    ) -> list[Generation]:
        """One reply per chat (each chat recorded in `calls` with `n` = 1; one model call)."""
        self.model_calls.append(("batch", len(requests)))
        self._in_batch = True
        try:
            return [self.generate(m, v, sampling=sampling)[0] for m, v in requests]
        finally:
            self._in_batch = False


@dataclass
class BoxTracker:
    """A fake tracker: the mask of every frame is the prompted box itself. Records each prompt
    it tracks in `calls` and each several-prompt pass (`stream_group`) in `passes`."""

    calls: list[tuple[int, list[Box]]] = field(default_factory=list)
    passes: list[list[TrackPrompt]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "box"

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
        self.calls.append((frame_index, list(boxes)))
        n, h, w = video.num_frames, video.info.height, video.info.width
        masks = np.zeros((n, h, w), dtype=bool)
        for box in boxes:
            x, y, bw, bh = box.to_int_xywh()
            masks[:, y : y + bh, x : x + bw] = True
        if progress is not None:
            for _ in range(n):
                progress(1)
        return MaskTrack(masks, {1: masks.copy()})

    def stream_group(
        self, video: Video, prompts: Sequence[TrackPrompt], *, progress: ProgressCallback | None = None
    ) -> Iterator[tuple[int, FrameMasks]]:
        """Several prompts in one pass (recorded), each tracked as `track` would."""
        self.passes.append(list(prompts))
        for i, prompt in enumerate(prompts):
            track = self.track(video, frame_index=prompt.frame_index, boxes=prompt.boxes, progress=progress)
            for f in range(track.num_frames):
                yield i, FrameMasks(f, {1: track.masks[f]})
