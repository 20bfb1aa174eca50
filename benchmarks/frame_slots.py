"""Token cost of the round-1 frame layouts under the released Qwen2.5-VL-7B processor budgets.

16 frame ids at 480p and 1080p: `paired` (frames as sampled, two per temporal slot),
`frame-per-slot` (each frame repeated: one slot per id; the default) and, for comparison, the
frames as 16 separate images (one image each, timestamps as text), measured by running the
input builder on a tiny checkpoint that carries the released processor configuration.

    python benchmarks/frame_slots.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from revseg_agent.policies.base import ChatMessage, ImageFrame, TextPart, VideoFrames, VisualPart
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl

FRAMES = 16


def _tokens(policy: QwenVLPolicy, messages: list[ChatMessage], visuals: dict) -> int:  # type: ignore[type-arg]
    inputs = policy.prepare_inputs(messages, visuals)
    return int((inputs["mm_token_type_ids"] > 0).sum())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        released = build_tiny_qwen2_5_vl(Path(tmp) / "released", released_budgets=True, released_vocab=True)
        print(f"{'frames':>9} {'layout':>16} {'visual tokens':>14} {'slots':>6}")
        for name, (h, w) in {"480p": (480, 854), "1080p": (1080, 1920)}.items():
            frames = [np.full((h, w, 3), 10 * k, np.uint8) for k in range(FRAMES)]
            clip = VideoFrames(frames, list(range(0, 30 * FRAMES, 30)), 30.0, 30 * FRAMES)
            for layout in ("paired", "frame-per-slot"):
                policy = QwenVLPolicy.from_pretrained(released, device="cpu", frame_layout=layout)  # type: ignore[arg-type]
                chat = [
                    ChatMessage(role="user", content=[VisualPart(type="video", ref="v"), TextPart(text="q")])
                ]
                inputs = policy.prepare_inputs(chat, {"v": clip})
                slots = int(inputs["video_grid_thw"][0, 0])
                print(f"{name:>9} {layout:>16} {_tokens(policy, chat, {'v': clip}):>14} {slots:>6}")
            content: list[TextPart | VisualPart] = []
            for k in range(FRAMES):
                content += [TextPart(text=f"{k + 1}: {k:.1f}s"), VisualPart(type="image", ref=f"f{k}")]
            images = {f"f{k}": ImageFrame(f) for k, f in enumerate(frames)}
            chat = [ChatMessage(role="user", content=content)]
            print(f"{name:>9} {'16 images':>16} {_tokens(policy, chat, images):>14} {FRAMES:>6}")


if __name__ == "__main__":
    main()
