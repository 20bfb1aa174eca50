"""Score predictions against a benchmark's ground truth with its protocol, no model involved.

Protocol (MeViS, ReVOS, ReasonVOS; the same is applied to the others): every frame of an
expression is scored, J and F are averaged over its frames, then over expressions; J&F is the
mean of the two. Numbers in the results are percentages, as papers report them.
- ReVOS: no-target expressions (type 2) are excluded from J&F; "overall" is the mean of the
  referring mean and the reasoning mean (not the pooled mean); accuracy A and robustness R too.
- A missing prediction folder scores 0 (`missing="zero"`, MeViS and ReVOS scripts) or is left
  out (`missing="skip"`, the ReasonVOS script); the default follows each benchmark's own script
  and the choice is recorded in the results.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from revseg_agent.eval.datasets import Benchmark, RefDAVISBenchmark, Sample, read_prediction
from revseg_agent.eval.metrics import revos_accuracy, revos_robustness, score_clip

MissingRule = Literal["zero", "skip"]
DEFAULT_MISSING: dict[str, MissingRule] = {
    "mevis": "zero",
    "revos": "zero",
    "reasonvos": "skip",
    "refytvos": "zero",
    "refdavis": "zero",
}
Status = Literal["scored", "missing_prediction", "skipped", "no_target", "no_ground_truth"]


class ExpressionResult(BaseModel):
    video: str
    exp_id: str
    text: str
    subset: str | None
    status: Status
    frames: int
    J: float | None = None  # fractions here; percent in the summary
    F: float | None = None
    JF: float | None = None
    A: float | None = None
    R: float | None = None

    @property
    def counted(self) -> bool:
        return self.J is not None


def score_sample(
    sample: Sample,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    *,
    missing: MissingRule,
    with_revos: bool = False,
) -> ExpressionResult:
    base = ExpressionResult(
        video=sample.video,
        exp_id=sample.exp_id,
        text=sample.text,
        subset=sample.subset,
        frames=len(sample.frames),
        status="scored",
    )
    if sample.subset == "no_target":
        return base.model_copy(update={"status": "no_target"})
    if gt is None:
        return base.model_copy(update={"status": "no_ground_truth"})
    if pred is None:
        if missing == "skip":
            return base.model_copy(update={"status": "skipped"})
        pred = np.zeros_like(gt)
        base = base.model_copy(update={"status": "missing_prediction"})
    clip = score_clip(pred, gt)
    update: dict[str, Any] = {"J": clip.j_mean, "F": clip.f_mean, "JF": clip.jf}
    if with_revos:
        update.update(A=float(revos_accuracy(pred, gt).mean()), R=revos_robustness(pred, gt))
    return base.model_copy(update=update)


def _means(rows: list[ExpressionResult]) -> dict[str, float]:
    if not rows:
        return {"J": 0.0, "F": 0.0, "J&F": 0.0, "count": 0}
    j = float(np.mean([r.J for r in rows])) * 100
    f = float(np.mean([r.F for r in rows])) * 100
    out = {"J": j, "F": f, "J&F": (j + f) / 2, "count": len(rows)}
    if all(r.A is not None for r in rows):
        out["A"] = float(np.mean([r.A for r in rows])) * 100
        out["R"] = float(np.mean([r.R for r in rows])) * 100
    return out


def summarise(dataset: str, results: list[ExpressionResult], *, missing: MissingRule) -> dict[str, Any]:
    """The results document: top-level J, F, J&F (percent), per-subset means, per expression."""
    counted = [r for r in results if r.counted]
    by_subset: dict[str, list[ExpressionResult]] = defaultdict(list)
    for r in counted:
        by_subset[r.subset or "all"].append(r)
    subsets = {name: _means(rows) for name, rows in sorted(by_subset.items())}
    if dataset == "revos" and {"referring", "reasoning"} <= subsets.keys():
        top = {k: (subsets["referring"][k] + subsets["reasoning"][k]) / 2 for k in ("J", "F", "J&F")}
        top["count"] = len(counted)
        subsets["overall"] = dict(top)
    else:
        top = _means(counted)
    statuses: dict[str, int] = defaultdict(int)
    for r in results:
        statuses[r.status] += 1
    return {
        "dataset": dataset,
        "J": top["J"],
        "F": top["F"],
        "J&F": top["J&F"],
        "missing_rule": missing,
        "counts": dict(statuses),
        "subsets": subsets,
        "expressions": [r.model_dump() for r in results],
    }


def score_predictions(
    bench: Benchmark,
    pred_root: str | Path,
    *,
    missing: MissingRule | None = None,
    samples: Iterable[Sample] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score a folder of predictions in the benchmark's own layout."""
    rule = missing or DEFAULT_MISSING[bench.name]
    results = []
    for sample in samples if samples is not None else bench.samples():
        gt = bench.ground_truth(sample)
        pred = read_prediction(bench, Path(pred_root), sample, gt.shape[1:]) if gt is not None else None
        results.append(score_sample(sample, gt, pred, missing=rule, with_revos=bench.name == "revos"))
        if progress is not None:
            progress(1)
    summary = summarise(bench.name, results, missing=rule)
    if isinstance(bench, RefDAVISBenchmark):
        # The official protocol (merged objects, Hungarian matching) gives the headline numbers;
        # the per-expression scores above stay as diagnostics.
        from revseg_agent.eval.refdavis import score_refdavis

        official = score_refdavis(bench, Path(pred_root))
        summary["per_expression"] = {k: summary[k] for k in ("J", "F", "J&F")}
        summary.update({k: official[k] for k in ("J", "F", "J&F")})
        summary["protocol"] = official["protocol"]
        summary["subsets"] = official["subsets"]
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table of J, F, J&F per subset, for the terminal."""
    lines = [f"{'subset':<14} {'count':>6} {'J':>7} {'F':>7} {'J&F':>7}"]
    for name, row in summary["subsets"].items():
        lines.append(f"{name:<14} {row['count']:>6} {row['J']:>7.2f} {row['F']:>7.2f} {row['J&F']:>7.2f}")
    lines.append(f"{'TOTAL':<14} {'':>6} {summary['J']:>7.2f} {summary['F']:>7.2f} {summary['J&F']:>7.2f}")
    return "\n".join(lines)


def expressions_csv(summary: dict[str, Any]) -> str:
    fields = ["video", "exp_id", "subset", "status", "frames", "J", "F", "JF", "A", "R", "text"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in summary["expressions"]:
        writer.writerow(row)
    return buf.getvalue()
