"""revseg-agent: reasoning video object segmentation (ReVSeg) as a LangGraph agent."""

from __future__ import annotations

from revseg_agent.errors import CheckpointError, InputError, PipelineFailure, RevsegError, VideoError
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.pipeline import SegmentationResult, result_from_state, segment
from revseg_agent.policies.base import Generation, Policy, SamplingParams
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.served import ServedPolicy
from revseg_agent.tools.base import Tracker
from revseg_agent.tools.classical import ClassicalTracker
from revseg_agent.tools.sam2_tracker import SAM2Tracker
from revseg_agent.traces import StepRecord, Trace
from revseg_agent.types import Box, MaskTrack
from revseg_agent.video import Video, open_video

__version__ = "0.1.0"

__all__ = [
    "Box",
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
    "segment",
]
