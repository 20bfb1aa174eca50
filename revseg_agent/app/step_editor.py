"""`revseg segment --step`: show each node's update in the terminal and take edits before the
next node (`set keyframe_index=12`, `set boxes=[[10, 20, 200, 240]]`), checked and recorded in
the trace as human edits (`graphs.edits`)."""

from __future__ import annotations

import json
from typing import Any

from revseg_agent.errors import InputError
from revseg_agent.graphs.edits import apply_edit


def show_update(node: str, update: dict[str, Any]) -> None:
    shown = {k: v for k, v in update.items() if k != "steps"}
    for step in update.get("steps", []):
        if step.get("completion") is not None:
            shown["completion"] = step["completion"]
        if step.get("error"):
            shown["step_error"] = step["error"]
        if step.get("fallback"):
            shown["fallback"] = step["fallback"]
    print(f"── {node}")
    for key, value in shown.items():
        print(f"   {key}: {json.dumps(value) if not isinstance(value, str) else value}")


def prompt_edit(graph: Any, config: dict[str, Any]) -> bool:
    """Ask the person what to do before the next node. Returns False to stop."""
    nxt = ", ".join(graph.get_state(config).next)
    while True:
        print(f"next: {nxt}. [Enter] continue · set KEY=JSON (e.g. set keyframe_index=12) · q quit")
        try:
            line = input("> ").strip()
        except EOFError:
            return True
        if not line:
            return True
        if line in {"q", "quit"}:
            return False
        if line.startswith("set ") and "=" in line:
            key, _, raw = line[4:].partition("=")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                print(f"   not JSON: {exc}")
                continue
            try:
                stored = apply_edit(graph, config, key.strip(), value)
            except InputError as exc:
                print(f"   refused: {exc}")
                continue
            print(f"   set {key.strip()} = {json.dumps(stored)}")
            continue
        print("   unrecognised")
