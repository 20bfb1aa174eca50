"""The package's layers, read from its imports (every import, inside functions too): no circle
between modules, and no arrow up from a lower layer to a higher one.

Layers, bottom up: the core (records, video, parsing, prompts, specs, settings, policies, tools),
then `graphs` (the chain, its context, registry, pipeline, traces), then `synth` (the synthetic
world and its tiny policy), `eval` and `training`, and `app` (CLI, UI, demo) at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "revseg_agent"
#: What each layer may not import (a module's layer is its first package below revseg_agent).
FORBIDDEN = {
    "core": {"graphs", "synth", "eval", "training", "app"},
    "graphs": {"synth", "eval", "training", "app"},
    "synth": {"eval", "training", "app"},
    "eval": {"training", "app"},
    "training": {"app"},
}
TOP_LEVEL_ABOVE_CORE = {"graphs", "synth", "eval", "training", "app", "__main__", ""}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def _layer(module: str) -> str:
    part = module.split(".")[1] if "." in module else ""
    return part if part in TOP_LEVEL_ABOVE_CORE else "core"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_two_modules_import_each_other_even_through_others() -> None:
    assert _cycles(_imports()) == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in sorted(targets)
        if _layer(target) in FORBIDDEN.get(_layer(module), set())
    ]
    assert upward == []


@pytest.mark.parametrize(
    ("edges", "cycles"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_circles_through_other_modules(
    edges: dict[str, set[str]], cycles: list[list[str]]
) -> None:
    assert _cycles(edges) == cycles
