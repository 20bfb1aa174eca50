"""Score predictions against a benchmark's ground truth with its protocol, no model involved.

Protocol (MeViS, ReVOS, ReasonVOS; the same is applied to the others): every frame of an
expression is scored, J and F are averaged over its frames, then over expressions; J&F is the
mean of the two. Numbers in the results are percentages, as papers report them.
- ReVOS, as its official evaluation (cilinyan/VISA `tools/eval_revos.py` + `tools/metrics.py`)
  computes it: no-target expressions (type 2) are left out; per expression J, F, A and R are
  rounded to two decimals (percent) before the means; J&F of a subset is the mean of its J and F;
  "overall" is the mean of the referring and reasoning means, for every metric. A and R are per
  frame, on the targets' uint8 sum (overlaps hold 2) and, for R, the video's foreground from
  `mask_dict_foreground.json`.
- A missing prediction scores 0 on every metric (`missing="zero"`, the MeViS and ReVOS scripts)
  or is left out (`missing="skip"`, the ReasonVOS script); the default follows each benchmark's
  own script and the choice is recorded in the results.
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

from revseg_agent.eval.datasets import Benchmark, RefDAVISBenchmark, RevosBenchmark, Sample, read_prediction
from revseg_agent.eval.metrics import revos_accuracy, revos_robustness, score_clip

MissingRule = Literal["zero", "skip"]
DEFAULT_MISSING: dict[str, MissingRule] = {
    "mevis": "zero",
    "revos": "zero",
    "reasonvos": "skip",
    "refytvos": "zero",
    "refdavis": "zero",
}
#: ReVOS's extra ground truth: the targets' uint8 sum and the video's foreground, `(frames, H, W)`.
RevosTruth = tuple[np.ndarray, np.ndarray]
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
    revos: RevosTruth | None = None,
) -> ExpressionResult:
    """One expression's scores. `revos` (the targets' uint8 sum and the video's foreground)
    adds ReVOS's A and R."""
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
        zero = {"J": 0.0, "F": 0.0, "JF": 0.0, **({"A": 0.0, "R": 0.0} if revos is not None else {})}
        return base.model_copy(update={"status": "missing_prediction", **zero})
    clip = score_clip(pred, gt)
    update: dict[str, Any] = {"J": clip.j_mean, "F": clip.f_mean, "JF": clip.jf}
    if revos is not None:
        target_sum, foreground = revos
        update.update(
            A=float(revos_accuracy(pred, target_sum).mean()),
            R=float(revos_robustness(pred, target_sum, foreground).mean()),
        )
    return base.model_copy(update=update)


def revos_truth(bench: Benchmark, sample: Sample) -> RevosTruth | None:
    """What ReVOS's A and R need beside the union mask (None for other benchmarks)."""
    if not isinstance(bench, RevosBenchmark):
        return None
    return bench.target_sum(sample), bench.foreground(sample)


def _means(rows: list[ExpressionResult], *, rounded: bool = False) -> dict[str, float]:
    """Means in percent over expressions; `rounded`: each expression's value is first rounded
    to two decimals (the ReVOS script's order of operations)."""
    if not rows:
        return {"J": 0.0, "F": 0.0, "J&F": 0.0, "count": 0}

    def mean(values: list[float | None]) -> float:
        percent = [100 * float(v or 0.0) for v in values]
        return float(np.mean([round(v, 2) for v in percent] if rounded else percent))

    j, f = mean([r.J for r in rows]), mean([r.F for r in rows])
    out = {"J": j, "F": f, "J&F": (j + f) / 2, "count": len(rows)}
    if all(r.A is not None for r in rows):
        out["A"] = mean([r.A for r in rows])
        out["R"] = mean([r.R for r in rows])
    return out


def summarise(dataset: str, results: list[ExpressionResult], *, missing: MissingRule) -> dict[str, Any]:
    """The results document: top-level J, F, J&F (percent), per-subset means, per expression."""
    counted = [r for r in results if r.counted]
    by_subset: dict[str, list[ExpressionResult]] = defaultdict(list)
    for r in counted:
        by_subset[r.subset or "all"].append(r)
    revos = dataset == "revos"
    subsets = {name: _means(rows, rounded=revos) for name, rows in sorted(by_subset.items())}
    if revos and {"referring", "reasoning"} <= subsets.keys():
        referring, reasoning = subsets["referring"], subsets["reasoning"]
        keys: list[str] = [k for k in ("J", "F", "J&F", "A", "R") if k in referring and k in reasoning]
        top: dict[str, float] = {k: (referring[k] + reasoning[k]) / 2 for k in keys}
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
        **{k: top[k] for k in ("A", "R") if k in top},
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
        truth = revos_truth(bench, sample) if gt is not None else None
        results.append(score_sample(sample, gt, pred, missing=rule, revos=truth))
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
    extra = [k for k in ("A", "R") if k in summary]  # ReVOS
    lines = [f"{'subset':<14} {'count':>6} {'J':>7} {'F':>7} {'J&F':>7}" + "".join(f" {k:>7}" for k in extra)]
    for name, row in summary["subsets"].items():
        cells = "".join(f" {row.get(k, float('nan')):>7.2f}" for k in extra)
        lines.append(
            f"{name:<14} {row['count']:>6} {row['J']:>7.2f} {row['F']:>7.2f} {row['J&F']:>7.2f}{cells}"
        )
    cells = "".join(f" {summary[k]:>7.2f}" for k in extra)
    lines.append(
        f"{'TOTAL':<14} {'':>6} {summary['J']:>7.2f} {summary['F']:>7.2f} {summary['J&F']:>7.2f}{cells}"
    )
    return "\n".join(lines)


def expressions_csv(summary: dict[str, Any]) -> str:
    fields = ["video", "exp_id", "subset", "status", "frames", "J", "F", "JF", "A", "R", "text"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in summary["expressions"]:
        writer.writerow(row)
    return buf.getvalue()
