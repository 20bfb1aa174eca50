"""`revseg demo`: the whole chain on a generated clip, offline, with a page that shows it.

A scene of the synthetic world (seeded) and one of its reasoning queries go through the real
graph (the shipped `revseg-tiny` policy unless another is named, the weight-free tracker); the
masks, overlay video and trace are written as `revseg segment` writes them, plus `demo.html`:
the query, round 1's thinking and answer, the sampled frames with the chosen keyframe marked,
round 2's box on the keyframe, mask overlays, the time each node took, and J&F against the
scene's exact ground truth. Nothing is trained.
"""

from __future__ import annotations

import base64
import html
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revseg_agent.eval.metrics import score_clip
from revseg_agent.graphs.names import SEMANTIC_INTERPRETATION, SPATIAL_GROUNDING
from revseg_agent.graphs.traces import Trace
from revseg_agent.io import atomic_output_dir, atomic_write_text
from revseg_agent.masks_io import Masks, overlay_frame
from revseg_agent.synth.dataset import WorldSpec, scene_seed, video_queries
from revseg_agent.synth.queries import NO_TARGET, Query
from revseg_agent.synth.scenes import Scene
from revseg_agent.types import Box

DEMO_FPS = 8.0
STYLE = (
    "body{font-family:sans-serif;margin:24px;max-width:1100px} "
    "figure{display:inline-block;margin:4px;text-align:center;font-size:12px} "
    "pre{background:#f4f4f4;padding:8px;white-space:pre-wrap} .score{font-size:22px}"
)


@dataclass
class DemoRun:
    out: Path
    query: Query
    jf: float
    trace: Trace
    seconds: float


def demo_scene(seed: int) -> tuple[Scene, Query]:
    """The scene and query of a demo seed: its first reasoning query (an attribute one when the
    scene has none)."""
    scene, queries = video_queries(scene_seed(seed, "demo", 0), "test", WorldSpec())
    asked = [q for q in queries if q.intent not in {"attribute", NO_TARGET}] or [queries[-1]]
    return scene, asked[0]


def write_frames(folder: Path, scene: Scene) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(scene.frames):
        if not cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write a frame to {folder}")
    return folder


def _uri(rgb: np.ndarray, scale: int = 2) -> str:
    big = cv2.resize(rgb, (rgb.shape[1] * scale, rgb.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("cannot encode a PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _step_text(trace: Trace, node: str) -> tuple[str, str]:
    step = trace.final_step(node)
    if step is None:
        return "", "(not reached)"
    attempts = sum(s.node == node for s in trace.steps)
    note = f" (fallback: {step.fallback})" if step.fallback else ""
    return step.completion or "", f"{attempts} attempt(s){note}, {step.duration_s:.2f} s"


def write_page(
    path: Path, scene: Scene, query: Query, trace: Trace, track: Masks, jf: float, seconds: float
) -> Path:
    """`demo.html`: one self-contained page (images inlined)."""
    key = trace.result.keyframe_index
    boxes = [Box.from_list(b) for b in trace.result.boxes or []]
    strip = []
    for k, index in enumerate(trace.sampled_indices):
        chosen = index == key
        border = "4px solid #e33" if chosen else "1px solid #999"
        strip.append(
            f'<figure><img src="{_uri(scene.frames[index])}" style="border:{border}" alt="frame {index}">'
            f"<figcaption>id {k + 1}{' (keyframe)' if chosen else ''}<br>frame {index}</figcaption></figure>"
        )
    keyframe_img = ""
    if key is not None:
        shown = scene.frames[key].copy()
        for box in boxes:
            x1, y1, x2, y2 = (round(v) for v in box.to_list())
            cv2.rectangle(shown, (x1, y1), (x2, y2), (255, 220, 0), 1)
        keyframe_img = f'<img src="{_uri(shown, 3)}" alt="keyframe with box">'
    picks = np.linspace(0, len(scene.frames) - 1, 6).round().astype(int)
    overlays = "".join(
        f'<figure><img src="{_uri(overlay_frame(scene.frames[t], track.frame(t)))}" alt="overlay {t}">'
        f"<figcaption>frame {t}</figcaption></figure>"
        for t in picks
    )
    think1, info1 = _step_text(trace, SEMANTIC_INTERPRETATION)
    think2, info2 = _step_text(trace, SPATIAL_GROUNDING)
    timings = "".join(
        f"<tr><td>{html.escape(s.node)}</td><td>{s.attempt}</td><td>{s.duration_s:.3f} s</td></tr>"
        for s in trace.steps
    )
    targets = ", ".join(o.name for o in scene.objects if o.obj_id in query.targets) or "none"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>revseg demo</title>
<style>{STYLE}</style></head><body>
<h1>revseg demo</h1>
<p><b>Query:</b> {html.escape(query.text)}
<i>({html.escape(query.intent)}; the answer is {html.escape(targets)})</i></p>
<p class="score">J&amp;F against the exact ground truth: <b id="jf">{100 * jf:.1f}</b></p>
<p>Policy <code>{html.escape(trace.policy)}</code>, tracker <code>{html.escape(trace.tracker)}</code>,
{seconds:.1f} s in all.</p>
<h2>Round 1: semantic interpretation and temporal evidence</h2>
<p>{html.escape(info1)}</p>
<pre id="round1">{html.escape(think1)}</pre>
<div id="frames">{"".join(strip)}</div>
<h2>Round 2: spatial grounding on the keyframe</h2><p>{html.escape(info2)}</p>
<pre id="round2">{html.escape(think2)}</pre>
<div id="keyframe">{keyframe_img}</div>
<h2>Masks through the video</h2><div id="overlays">{overlays}</div>
<h2>Timings</h2><table border="1" cellpadding="4">
<tr><th>node</th><th>attempt</th><th>time</th></tr>{timings}</table>
</body></html>"""
    return atomic_write_text(path, page)


def run_demo(
    out: str | Path,
    *,
    seed: int = 0,
    policy: Any = "revseg-tiny",
    tracker: Any = "classical",
    num_frames: int = 8,
    overwrite: bool = False,
) -> DemoRun:
    """Generate, run the chain, write `OUT/{input/, masks/, masks.json, overlay.mp4, trace.json,
    demo.html}` atomically, and score it."""
    from revseg_agent.app.outputs import write_overlay_video
    from revseg_agent.graphs.context import Context
    from revseg_agent.graphs.graph import build_graph
    from revseg_agent.graphs.pipeline import result_from_state
    from revseg_agent.graphs.registry import resolve_policy, resolve_tracker
    from revseg_agent.masks_io import write_png_masks
    from revseg_agent.policies.base import SamplingParams
    from revseg_agent.video import open_video

    started = time.time()
    scene, query = demo_scene(seed)
    out = Path(out)
    with atomic_output_dir(out, overwrite=overwrite, kind="demo", option="revseg demo") as tmp:
        frames = write_frames(tmp / "input", scene)
        context = Context(
            policy=resolve_policy(policy),
            tracker=resolve_tracker(tracker),
            num_frames=num_frames,
            max_attempts=1,
            on_parse_failure="fallback",
            sampling=SamplingParams(max_new_tokens=160),
            artifacts_dir=tmp / ".artifacts",
        )
        state = build_graph().invoke({"video_path": str(frames), "query": query.text}, context=context)
        result = result_from_state(state, context)
        video = open_video(frames, fps=DEMO_FPS)
        truth = np.zeros(scene.frames.shape[:3], bool)
        for obj_id in query.targets:
            truth |= scene.masks[obj_id]
        jf = score_clip(result.masks.masks, truth).jf
        write_png_masks(tmp / "masks", result.masks.masks)
        (tmp / "masks.json").write_bytes(Path(result.trace.result.masks_path or "").read_bytes())
        boxes = [Box.from_list(b) for b in result.trace.result.boxes or []]
        write_overlay_video(
            tmp / "overlay.mp4", video, result.masks, keyframe=result.trace.result.keyframe_index, boxes=boxes
        )
        result.trace.save(tmp / "trace.json")
        seconds = time.time() - started
        write_page(tmp / "demo.html", scene, query, result.trace, result.masks, jf, seconds)
        shutil.rmtree(tmp / ".artifacts", ignore_errors=True)
    return DemoRun(out=out, query=query, jf=jf, trace=result.trace, seconds=seconds)
