"""The run's record for people: `metrics.csv` (one row per optimizer step, atomic rewrites) and a
PNG of its curves."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from revseg_agent.io import atomic_write_text


def _write_rows(path: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def append_csv(path: Path, row: dict[str, float]) -> None:
    """Append one row; a new column (a reward absent so far) rewrites the file with the union."""
    new = not path.is_file()
    if not new:
        with path.open(encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        if header != list(row):
            with path.open(encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            rows.append({k: str(v) for k, v in row.items()})
            _write_rows(path, list(dict.fromkeys([*header, *row])), rows)
            return
    with path.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def keep_csv_steps_up_to(path: Path, step: int) -> int:
    """Drop metric rows after `step` (atomic rewrite); returns how many were dropped."""
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    kept = [r for r in rows if float(r["step"]) <= step]
    if len(kept) != len(rows):
        _write_rows(path, fields, kept)
    return len(rows) - len(kept)


def plot_metrics(csv_path: Path, png_path: Path) -> Path | None:
    """Reward curves, loss and KL per step as one PNG (for people; the CSV is the record)."""
    if not csv_path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    steps = [float(r["step"]) for r in rows]
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in rows[0]:
        if key.startswith("reward_"):
            ax_r.plot(steps, [float(r[key] or "nan") for r in rows], label=key[7:])
    ax_r.set_xlabel("step")
    ax_r.set_title("mean reward")
    ax_r.legend(fontsize=8)
    ax_l.plot(steps, [float(r["loss"]) for r in rows], label="loss")
    ax_l.plot(steps, [float(r["kl"]) for r in rows], label="KL")
    ax_l.set_xlabel("step")
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
