"""The two prompts of the ReVSeg chain. Nothing else lives here.

Round 1 (semantic interpretation + temporal evidence selection): the policy sees the uniformly
sampled frames as one video and the query, reasons inside `<think>`, and answers inside `<answer>`
with the keyframe's id and an explicit description of the object.
Round 2 (spatial grounding): the policy sees the keyframe alone and is asked, in Qwen2.5-VL's
native grounding phrasing, to detect the described object with box coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Frame ids shown to the policy start at this number (people and LLMs count from 1).
FRAME_ID_BASE = 1

SYSTEM_PROMPT = "You are a helpful assistant."

ROUND1_TEMPLATE = (
    "The video above shows {num_frames} frames sampled uniformly from a {duration:.1f}-second clip, "
    "numbered {first_id} to {last_id} in order (frame k is at the time listed: {timeline}).\n"
    'Query: "{query}"\n'
    "Work out which object the query refers to, then pick the one frame among these in which that "
    "object is most clearly and completely visible. Think step by step inside <think></think>, then "
    "give the final answer inside <answer></answer> exactly in this form:\n"
    "<answer>frame id: <number>\nobject description: <a short description of the object that "
    "identifies it in that single frame></answer>"
)

ROUND2_TEMPLATE = "Detect {description} with bbox coordinates."


def round1_text(query: str, timestamps: Sequence[float]) -> str:
    """The user text of round 1; the sampled frames go before it as one video."""
    n = len(timestamps)
    timeline = ", ".join(f"{FRAME_ID_BASE + k}: {t:.1f}s" for k, t in enumerate(timestamps))
    duration = (timestamps[-1] - timestamps[0]) if n > 1 else 0.0
    return ROUND1_TEMPLATE.format(
        num_frames=n,
        duration=duration,
        first_id=FRAME_ID_BASE,
        last_id=FRAME_ID_BASE + n - 1,
        timeline=timeline,
        query=query.strip(),
    )


def round2_text(description: str) -> str:
    """The user text of round 2; the keyframe image goes before it."""
    return ROUND2_TEMPLATE.format(description=description.strip().rstrip("."))
