"""The architecture of `revseg-tiny`: a small Qwen2.5-VL sized for the synthetic world.

Why these choices: the world's frames are 112 x 112, so one frame is 4 x 4 tokens of 28 px and a
video of 8 sampled frames is 128 tokens; its language is the chain's prompts, the queries'
phrasings, object names and numbers, so the tokenizer is a BPE fitted to exactly that, splitting
digits one at a time as Qwen's own does (a coordinate's tens digit is a coarse position the
policy can learn before its units digit); positions stay under a few
hundred, so `rope_theta` is small enough that every rotary frequency turns within them.
"""

from __future__ import annotations

from pathlib import Path

from revseg_agent.graphs.chats import round1_messages
from revseg_agent.parsing import format_box_answer, format_keyframe_answer
from revseg_agent.policies.base import TextPart
from revseg_agent.prompts import SYSTEM_PROMPT, round2_text
from revseg_agent.synth.queries import PHRASINGS
from revseg_agent.synth.scenes import COLOURS, SHAPES, SIZE
from revseg_agent.types import Box

#: The policy's view of a frame and of the keyframe (the world's frame size).
PIXELS = SIZE[0] * SIZE[1]


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is fitted to: prompts, phrasings, answers and numbers."""
    names = [f"the {c} {s}" for c in COLOURS for s in SHAPES]
    lines = [SYSTEM_PROMPT, "system user assistant"]
    for n in (4, 8, 12, 16):
        timestamps = [k * 0.5 for k in range(n)]
        for message in round1_messages("the red circle", timestamps):
            lines.append(" ".join(p.text for p in message.content if isinstance(p, TextPart)))
    for intent, templates in PHRASINGS.items():
        for template in templates:
            for k, name in enumerate(names):
                colour, shape = name.split()[1:]
                other = names[(k + 5) % len(names)]
                text = template.format(name=name, colour=colour, shape=shape, hitter=other, hit=other)
                lines.append(f"The query asks for {text}. {name.capitalize()} {intent}.")
    for k, name in enumerate(names):
        lines.append(
            format_keyframe_answer(f"The query asks for {name}. It is in frame {k % 16 + 1}.", k % 16, name)
        )
        lines.append(round2_text(name))
    for v in range(SIZE[1] + 1):
        box = Box(v % 100, (v * 7) % SIZE[0], min(SIZE[1], v + 5), min(SIZE[0], v + 9))
        lines.append(format_box_answer([box], names[v % len(names)]))
        lines.append(f"{v}, {v} {v}] [{v},")
    return lines


def build_revseg_tiny(out: str | Path, *, seed: int = 0, rope_theta: float = 3.0) -> Path:
    """Write the random-init `revseg-tiny` (model + processor) to `out`."""
    from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(
        out,
        seed=seed,
        text_hidden=128,
        text_layers=4,
        text_heads=4,
        vision_hidden=64,
        vision_depth=2,
        vision_heads=2,
        image_max_pixels=PIXELS,
        video_max_pixels=PIXELS,
        tokenizer_corpus=tokenizer_corpus(),
        vocab_size=1200,
        qwen_split=True,  # digits one at a time, as Qwen's tokenizer splits them
        rope_theta=rope_theta,
    )
