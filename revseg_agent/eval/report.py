"""An HTML report of an evaluation folder: summary, J&F distribution, chain diagnostics and a
gallery of the worst expressions (keyframe with ground truth, predicted box and mask).

One self-contained file (images inlined as base64) so it can be mailed or attached to a PR.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revseg_agent.eval.datasets import Benchmark
from revseg_agent.io import atomic_write_text
from revseg_agent.masks_io import overlay_frame, read_mask_png
from revseg_agent.types import Box
from revseg_agent.video import frame_files

GALLERY_SIZE = 8
GT_RGB = (40, 220, 60)


def _png_data_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("cannot encode a PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _figure_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(scored: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jf = [100 * r["JF"] for r in scored]
    with_diag = [r for r in scored if r.get("keyframe_area_ratio") is not None]
    cols = 3 if with_diag else 1
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.2), squeeze=False)
    ax = axes[0][0]
    ax.hist(jf, bins=20, range=(0, 100), color="#4c72b0")
    ax.set_xlabel("J&F per expression (%)")
    ax.set_ylabel("expressions")
    ax.set_title("J&F distribution")
    if with_diag:
        for ax, key, label in (
            (axes[0][1], "keyframe_area_ratio", "keyframe area ratio (temporal)"),
            (axes[0][2], "box_iou", "keyframe box IoU (spatial)"),
        ):
            pts = [(r[key], 100 * r["JF"]) for r in with_diag if r.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=12, alpha=0.7, color="#dd8452")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-2, 102)
            ax.set_xlabel(label)
            ax.set_ylabel("J&F (%)")
    uri = _figure_uri(fig)
    plt.close(fig)
    return f'<img alt="J&amp;F distribution and diagnostics" src="{uri}">'


def _gallery_image(bench: Benchmark, out_dir: Path, record: dict[str, Any]) -> str | None:
    sample = next((s for s in bench.samples() if s.key == record["key"]), None)
    if sample is None:
        return None
    gt = bench.ground_truth(sample)
    key = record.get("keyframe_index")
    if key is None or not 0 <= key < len(sample.frames):
        key = len(sample.frames) // 2
    frames = frame_files(bench.frames_dir(sample))
    bgr = cv2.imread(str(frames[sample.frames[key]]))
    if bgr is None:
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    pred_png = bench.prediction_dir(out_dir / "predictions", sample) / f"{sample.frames[key]}.png"
    pred = read_mask_png(pred_png) if pred_png.is_file() else np.zeros(rgb.shape[:2], bool)
    boxes = None
    trace_path = out_dir / record["trace"] if record.get("trace") else None
    if trace_path is not None and trace_path.is_file():
        result = json.loads(trace_path.read_text(encoding="utf-8")).get("result", {})
        boxes = [Box.from_list(b) for b in result.get("boxes") or []]
    # Resize first (small frames are enlarged, pixelated, so they can be seen), then draw.
    h, w = rgb.shape[:2]
    size = (round(w * 360 / max(h, w)), round(h * 360 / max(h, w)))
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if size[0] < w else cv2.INTER_NEAREST)

    def fit(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)

    scaled_boxes = [b.rescale((h, w), (size[1], size[0])) for b in boxes or []]
    shown = overlay_frame(rgb, fit(pred), scaled_boxes)
    if gt is not None:
        contours, _ = cv2.findContours(
            fit(gt[key]).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(shown, contours, -1, GT_RGB, 2)
    return _png_data_uri(shown)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{100 * value:.1f}" if pct else f"{value:.3f}"
    return html.escape(str(value))


def write_report(out_dir: str | Path, bench: Benchmark, *, gallery_size: int = GALLERY_SIZE) -> Path:
    """Write `out_dir/report.html` from `out_dir/results.json` and return its path."""
    out = Path(out_dir)
    summary = json.loads((out / "results.json").read_text(encoding="utf-8"))
    records = summary["expressions"]
    scored = [r for r in records if r.get("J") is not None]
    subsets = _table(
        [
            [html.escape(name), str(row["count"]), f"{row['J']:.2f}", f"{row['F']:.2f}", f"{row['J&F']:.2f}"]
            for name, row in summary["subsets"].items()
        ]
        + [
            [
                "<b>total</b>",
                str(len(scored)),
                f"<b>{summary['J']:.2f}</b>",
                f"<b>{summary['F']:.2f}</b>",
                f"<b>{summary['J&F']:.2f}</b>",
            ]
        ],
        ["subset", "expressions", "J", "F", "J&F"],
    )
    diag = summary.get("diagnostics") or {}
    diag_rows = [[html.escape(k.replace("_", " ")), _fmt(v)] for k, v in diag.items()]
    diagnostics = _table(diag_rows, ["diagnostic", "value"]) if diag_rows else ""
    worst = sorted(scored, key=lambda r: r["JF"])[:gallery_size]
    cards = []
    for r in worst:
        uri = _gallery_image(bench, out, r)
        img = f'<img alt="keyframe of {html.escape(r["key"])}" src="{uri}">' if uri else ""
        facts = (
            f"J&amp;F {_fmt(r['JF'], pct=True)} · J {_fmt(r['J'], pct=True)} · F {_fmt(r['F'], pct=True)}<br>"
            f"keyframe {_fmt(r.get('keyframe_index'))} · area ratio {_fmt(r.get('keyframe_area_ratio'))} · "
            f"box IoU {_fmt(r.get('box_iou'))} · "
            f"parsed {_fmt(r.get('round1_parsed'))}/{_fmt(r.get('round2_parsed'))}"
        )
        if r.get("chain_error"):
            facts += f"<br>chain failed: {html.escape(r['chain_error'])}"
        cards.append(
            f"<figure>{img}<figcaption><b>{html.escape(r['video'])} / {html.escape(r['exp_id'])}</b>: "
            f"“{html.escape(r.get('text') or '')}”<br>{facts}</figcaption></figure>"
        )
    title = f"revseg-agent evaluation: {summary['dataset']}" + (
        f" (baseline: {summary['baseline']})" if summary.get("baseline") else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; width: 370px; }} figcaption {{ font-size: 0.85rem; }}
.legend span {{ padding: 0 0.4rem; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(records)} expressions; missing predictions: {html.escape(summary.get("missing_rule", ""))};
statuses: {html.escape(json.dumps(summary.get("counts", {})))}. Numbers are percentages.</p>
<h2>Summary</h2>{subsets}
<h2>Distribution and diagnostics</h2>{_plots(scored) if scored else "<p>nothing scored</p>"}
{diagnostics}
<h2>Worst expressions</h2>
<p class="legend"><span style="color:#2c2">■ ground truth</span>
<span style="color:#c0c">■ predicted mask</span><span style="color:#db0">□ predicted box</span></p>
<div class="gallery">{"".join(cards)}</div>
</body></html>
"""
    return atomic_write_text(out / "report.html", page)
