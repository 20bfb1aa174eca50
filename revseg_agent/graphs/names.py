"""The graph's node names: the one place they are written (traces, rewards, training and
diagnostics refer to nodes through these)."""

from __future__ import annotations

from typing import Final, Literal

NodeName = Literal[
    "sample_frames", "semantic_interpretation", "temporal_evidence_selection", "spatial_grounding", "track"
]

SAMPLE_FRAMES: Final = "sample_frames"
#: Round 1: the policy reads the query against the sampled frames.
SEMANTIC_INTERPRETATION: Final = "semantic_interpretation"
TEMPORAL_EVIDENCE_SELECTION: Final = "temporal_evidence_selection"
#: Round 2: the policy boxes the described object on the keyframe.
SPATIAL_GROUNDING: Final = "spatial_grounding"
TRACK: Final = "track"
NODES: Final = (SAMPLE_FRAMES, SEMANTIC_INTERPRETATION, TEMPORAL_EVIDENCE_SELECTION, SPATIAL_GROUNDING, TRACK)
#: The served graph's last step (not a trace step): what a client receives.
RESPOND: Final = "respond"
#: The nodes whose steps the policy wrote (what training replays).
POLICY_NODES: Final = (SEMANTIC_INTERPRETATION, SPATIAL_GROUNDING)
