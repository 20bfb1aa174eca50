"""revseg-agent: reasoning video object segmentation (ReVSeg) as a LangGraph agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from revseg_agent.errors import CheckpointError, InputError, PipelineFailure, RevsegError, VideoError
from revseg_agent.graphs.context import Context, RunSettings
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.pipeline import SegmentationResult, result_from_state, segment
from revseg_agent.graphs.traces import StepRecord, Trace
from revseg_agent.graphs.video_queries import run_queries
from revseg_agent.policies.base import Generation, Policy, SamplingParams
from revseg_agent.policies.served import ServedPolicy
from revseg_agent.settings import ChainSettings
from revseg_agent.tools.base import Tracker
from revseg_agent.tools.classical import ClassicalTracker
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video, open_video

__version__ = "0.1.0"

if TYPE_CHECKING:
    from revseg_agent.policies.qwen import QwenVLPolicy
    from revseg_agent.tools.sam2_tracker import SAM2Tracker

#: Imported on first use: they import torch (seconds), which a served graph's start-up and the
#: command line's quick paths do not need.
_LAZY = {
    "QwenVLPolicy": "revseg_agent.policies.qwen",
    "SAM2Tracker": "revseg_agent.tools.sam2_tracker",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'revseg_agent' has no attribute {name!r}")


__all__ = [
    "Box",
    "ChainSettings",
    "CheckpointError",
    "ClassicalTracker",
    "Context",
    "Generation",
    "InputError",
    "MaskTrack",
    "PipelineFailure",
    "Policy",
    "QwenVLPolicy",
    "RevsegError",
    "RunSettings",
    "SAM2Tracker",
    "SamplingParams",
    "SegmentationResult",
    "ServedPolicy",
    "StepRecord",
    "Trace",
    "Tracker",
    "Video",
    "VideoError",
    "build_graph",
    "open_video",
    "result_from_state",
    "run_queries",
    "segment",
]
