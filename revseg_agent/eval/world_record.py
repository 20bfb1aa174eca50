"""What a policy scored on the synthetic world's test split, kept beside its weights.

`benchmarks/synthetic_world.py --record` writes `world-benchmark.json` into each local policy
folder it measures; `revseg demo` prints it beside the one scene it runs, so a reader sees the
policy's mean over many scenes next to the single example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from revseg_agent.io import atomic_write_text

WORLD_RECORD = "world-benchmark.json"


def write_world_record(policy_dir: str | Path, record: dict[str, Any]) -> Path:
    path = Path(policy_dir) / WORLD_RECORD
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_world_record(policy_dir: str | Path) -> dict[str, Any] | None:
    """The record of a local policy folder, or None (not measured, or not a folder)."""
    path = Path(policy_dir) / WORLD_RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_line(record: dict[str, Any] | None) -> str:
    if record is None:
        return "on the synthetic world's test split: not measured for this policy"
    return (
        f"on the synthetic world's test split ({record['expressions']} expressions, "
        f"`{record['command']}`): J&F {record['J&F']:.1f} (centre box {record['centre_box_J&F']:.1f}), "
        f"median keyframe box IoU {record['median_box_iou']:.2f}"
    )
