"""Evaluation on a Ray cluster: `revseg eval ... --ray [ADDRESS] --workers N`.

Each worker is a Ray actor that builds its own runner from the `EvalSpec` (its own policy and
tracker, `gpus_per_worker` GPUs each) and runs whole units (a video's expressions, run together
as `EvalRunner.run_unit` does; one expression with `per_expression`): predictions and traces are
written by the worker into the output folder (which every node must see: one machine, or a
shared file system), and its record comes back to the coordinating process, which alone appends
`records.jsonl` and writes `results.json` exactly as a single-process run does. So a killed Ray
run resumes with either executor. A failed expression is retried (`retries`), on another worker
when one is free; a worker process that dies is restarted by Ray. A unit's records come back
together; a retried unit redoes only its expressions without a record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from revseg_agent.errors import ResourceError
from revseg_agent.eval.datasets import Sample
from revseg_agent.eval.spec import EvalSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    #: A running cluster (`ray://host:10001`, `auto`), or None for a local one started here.
    address: str | None = None
    workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    #: Attempts after the first for a unit whose task failed.
    retries: int = 2


class EvalWorker:
    """One Ray actor: a runner of its own, built from the spec in the worker's process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        torch.set_num_threads(1)  # a worker per CPU: do not oversubscribe the node
        self.runner = EvalSpec.from_json(spec).build_runner()
        self.samples = {s.key: s for s in self.runner.bench.samples()}

    def run(self, keys: list[str], work: str) -> list[dict[str, Any]]:
        return list(self.runner.run_unit([self.samples[key] for key in keys], Path(work)))


class RayExecutor:
    """An `EvalRunner` executor that runs expressions on Ray actors."""

    def __init__(self, spec: EvalSpec, options: RayOptions | None = None) -> None:
        self.spec = spec
        self.options = options or RayOptions()
        if self.options.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.options.workers}")

    def __call__(self, todo: list[list[Sample]], work: Path) -> Iterator[dict[str, Any]]:
        if not todo:
            return
        ray = _import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            kwargs: dict[str, Any] = {"address": self.options.address} if self.options.address else {}
            if not self.options.address:  # a local cluster sized for the workers asked for
                kwargs["num_cpus"] = max(1, int(self.options.workers * self.options.cpus_per_worker))
            ray.init(include_dashboard=False, logging_level=logging.WARNING, **kwargs)
        try:
            yield from self._run(ray, todo, work)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, todo: list[list[Sample]], work: Path) -> Iterator[dict[str, Any]]:
        opts = self.options
        actor = ray.remote(
            num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker, max_restarts=opts.retries
        )(EvalWorker)
        spec = self.spec.to_json()
        workers = [actor.remote(spec) for _ in range(min(opts.workers, len(todo)))]
        queue = [([s.key for s in unit], 0) for unit in todo]
        running: dict[Any, tuple[Any, list[str], int]] = {}
        idle = list(workers)
        # a unit that fails for good stops new work; the units running then still finish and
        # their records are kept (a video is minutes of work), then the failure is raised
        failure: BaseException | None = None
        try:
            while running or (queue and failure is None):
                while queue and idle and failure is None:
                    keys, attempt = queue.pop(0)
                    worker = idle.pop()
                    running[worker.run.remote(keys, str(work))] = (worker, keys, attempt)
                (ref,), _ = ray.wait(list(running), num_returns=1)
                worker, keys, attempt = running.pop(ref)
                idle.append(worker)
                try:
                    records = ray.get(ref)
                except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, ResourceError):  # the GPU's limit: a retry meets it again
                        failure = failure or cause
                        continue
                    name = keys[0] if len(keys) == 1 else f"{keys[0]} (+{len(keys) - 1} of its video)"
                    if attempt >= opts.retries:
                        failure = failure or RuntimeError(f"{name} failed {attempt + 1} times; last: {exc}")
                        continue
                    logger.warning("%s failed (attempt %d), retrying: %s", name, attempt + 1, exc)
                    queue.append((keys, attempt + 1))
                    continue
                yield from records
            if failure is not None:
                raise failure
        finally:  # killing a worker ends its task: what has not finished stays for a resumed run
            for worker in workers:
                ray.kill(worker)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("evaluation on Ray needs the `ray` extra: pip install -e .[ray]") from exc
    return ray
