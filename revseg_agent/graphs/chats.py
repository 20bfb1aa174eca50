"""The two rounds' chats: which messages, in which order, with which visuals by reference.

One home for the conversation's structure (the texts themselves are in `prompts`): the graph's
nodes, the supervised warm start and benchmarks build their chats here, so what SFT teaches and
GRPO replays is exactly what the graph asks.
"""

from __future__ import annotations

from collections.abc import Sequence

from revseg_agent.policies.base import ChatMessage, TextPart, VisualPart
from revseg_agent.prompts import SYSTEM_PROMPT, round1_text, round2_text

#: The names the chats give their visuals (keys of the `visuals` mapping a policy receives).
FRAMES_REF = "frames"
KEYFRAME_REF = "keyframe"


def round1_messages(query: str, timestamps: Sequence[float]) -> list[ChatMessage]:
    """Round 1: the sampled frames as one video (`FRAMES_REF`), then the query and their times."""
    return [
        ChatMessage(role="system", content=[TextPart(text=SYSTEM_PROMPT)]),
        ChatMessage(
            role="user",
            content=[VisualPart(type="video", ref=FRAMES_REF), TextPart(text=round1_text(query, timestamps))],
        ),
    ]


def round2_messages(
    description: str,
    *,
    round1: Sequence[ChatMessage] | None = None,
    round1_answer: str | None = None,
    round1_answer_ids: list[int] | None = None,
) -> list[ChatMessage]:
    """Round 2: the keyframe (`KEYFRAME_REF`) and the grounding request. With `round1` (its
    messages) and `round1_answer`, it continues that conversation (ReVSeg's default); the
    answer's sampled `round1_answer_ids` are passed through for token-in/token-out."""
    ask = ChatMessage(
        role="user",
        content=[VisualPart(type="image", ref=KEYFRAME_REF), TextPart(text=round2_text(description))],
    )
    if round1 is None or round1_answer is None:
        return [ChatMessage(role="system", content=[TextPart(text=SYSTEM_PROMPT)]), ask]
    answer = ChatMessage(
        role="assistant", content=[TextPart(text=round1_answer)], token_ids=round1_answer_ids
    )
    return [*round1, answer, ask]
