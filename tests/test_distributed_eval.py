"""`revseg eval --ray`: a local Ray cluster of 2 CPU workers writes, expression by expression,
what the single-process run writes; a run resumes with either executor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from revseg_agent.eval.runner import RECORDS, read_records
from revseg_agent.eval.spec import EvalSpec

from .benchmark_fixtures import write_textured_mevis
from .tolerance import assert_equal_within_float_tolerance

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.cross_process]

from revseg_agent.eval.distributed import RayExecutor, RayOptions  # noqa: E402

TIMING = {"seconds", "started_at", "duration_s"}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from revseg_agent.synth.dataset import WorldSpec, write_world

    root = tmp_path_factory.mktemp("world") / "synth"
    write_world(root, WorldSpec(seed=3, train=1, valid=1, test=2))
    return root / "test"


def _untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _folder(out: Path) -> dict[str, Any]:
    """Everything a run wrote that must not depend on the executor: records by key, results,
    traces and prediction files (bytes)."""
    files = {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix == ".png"
    }
    traces = {  # paths inside the output folder (the linked frames) named relative to it
        p.name: _untimed(json.loads(p.read_text().replace(str(out), "<out>")))
        for p in sorted((out / "traces").glob("*.json"))
    }
    for trace in traces.values():
        trace["result"].pop("masks_path", None)  # a worker's own temporary artifacts folder
    return {
        "records": _untimed(read_records(out / RECORDS)),
        "results": _untimed(json.loads((out / "results.json").read_text())),
        "traces": traces,
        "predictions": files,
    }


def _spec(root: Path, out: Path, **kw: Any) -> EvalSpec:
    return EvalSpec(dataset="mevis", root=root, out=out, tracker="classical", num_frames=4, **kw)


def test_ray_baseline_equals_the_single_process_run(local_cluster: None, tmp_path: Path) -> None:
    root = write_textured_mevis(tmp_path / "gt")
    single = _spec(root, tmp_path / "single", baseline="oracle")
    single.build_runner().run(progress=False)
    spread = _spec(root, tmp_path / "ray", baseline="oracle")
    summary = spread.build_runner(load=False).run(
        progress=False, executor=RayExecutor(spread, RayOptions(workers=2))
    )
    assert summary["counts"]["scored"] == 3
    assert _folder(tmp_path / "ray") == _folder(tmp_path / "single")


def test_ray_graph_run_equals_the_single_process_run_and_resumes_either_way(
    local_cluster: None, world: Path, tiny_policy_dir: Path, tmp_path: Path, two_torch_threads: None
) -> None:
    """Workers run one torch thread, this process two: log-probs in the traces differ in their last
    bits (reduction order) and are compared within `FLOAT_TOLERANCE`; all else exactly."""
    options = {"policy": str(tiny_policy_dir), "max_attempts": 1, "on_parse_failure": "fallback"}
    single = _spec(world, tmp_path / "single", **options)
    single.build_runner().run(progress=False)
    expressions = len(read_records(tmp_path / "single" / RECORDS))
    assert expressions >= 4

    spread = _spec(world, tmp_path / "ray", **options)
    executor = RayExecutor(spread, RayOptions(workers=2))
    spread.build_runner(load=False).run(progress=False, executor=executor)
    assert_equal_within_float_tolerance(_folder(tmp_path / "ray"), _folder(tmp_path / "single"))

    # half in this process, the rest on Ray (as after a killed run), and the other way round
    mixed = _spec(world, tmp_path / "mixed", **options)
    mixed.build_runner().run(progress=False, limit=expressions // 2)
    mixed.build_runner(load=False).run(progress=False, executor=RayExecutor(mixed, RayOptions(workers=2)))
    assert_equal_within_float_tolerance(_folder(tmp_path / "mixed"), _folder(tmp_path / "single"))
    back = _spec(world, tmp_path / "back", **options)
    back.build_runner(load=False).run(
        progress=False, limit=2, executor=RayExecutor(back, RayOptions(workers=2))
    )
    back.build_runner().run(progress=False)
    assert_equal_within_float_tolerance(_folder(tmp_path / "back"), _folder(tmp_path / "single"))


def test_a_failing_expression_is_retried_then_reported_and_the_rest_are_kept(
    local_cluster: None, tmp_path: Path
) -> None:
    import shutil

    root = write_textured_mevis(tmp_path / "gt")
    meta = json.loads((root / "meta_expressions.json").read_text())
    good = meta["videos"]["vid1"]
    shutil.copytree(root / "JPEGImages" / "vid1", root / "JPEGImages" / "vid0")
    broken = json.loads(json.dumps(good))
    broken["frames"].append("99999")  # a frame without masks: every try of vid1 fails
    meta["videos"] = {"vid0": good, "vid1": broken}
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    spec = _spec(root, tmp_path / "out", baseline="oracle")
    # the unit of work is the video: its first expression names it
    with pytest.raises(RuntimeError, match=r"vid1__0 \(\+2 of its video\) failed 3 times"):
        spec.build_runner(load=False).run(
            progress=False, executor=RayExecutor(spec, RayOptions(workers=2, retries=2))
        )
    kept = read_records(tmp_path / "out" / RECORDS)
    assert {"vid0__0", "vid0__1"} <= set(kept) <= {"vid0__0", "vid0__1", "vid0__2"}
    assert not (tmp_path / "out" / "results.json").exists()
