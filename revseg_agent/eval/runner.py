"""`revseg eval`: run the graph (or a baseline) over a benchmark split, resumably.

Output folder:
    predictions/      in the benchmark's own layout (what its official script / server reads)
    traces/<key>.json one trace per expression
    records.jsonl     one line per finished expression: scores and chain diagnostics
    results.json      the summary (top-level J, F, J&F in percent, subsets, expressions, diagnostics)
    expressions.csv   one row per expression
    submission.zip    the predictions zipped for benchmark servers
    report.html       the report (see `report.py`)
A record is appended (and fsynced) only after the expression's predictions and trace are in
place, so a killed run restarts at the first expression without a record, redoes at most the
ones it was working on, and never counts anything twice. A torn last line is discarded.

The unit of work is a video: its expressions (up to `group_size` at a time) run together
(`graphs.video_queries`: frames decoded once, each round one batched policy call, one tracker
pass for all their boxes), and each gets the predictions, trace and record it would get alone.
`per_expression=True` runs every expression on its own, for comparison and debugging.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from revseg_agent.eval.datasets import Benchmark, Sample
from revseg_agent.eval.diagnostics import aggregate, baseline_prompt, chain_diagnostics
from revseg_agent.eval.scoring import (
    DEFAULT_MISSING,
    ExpressionResult,
    MissingRule,
    expressions_csv,
    revos_truth,
    score_sample,
    summarise,
)
from revseg_agent.eval.submission import zip_predictions
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.pipeline import raise_if_out_of_memory, trace_from_state
from revseg_agent.graphs.registry import resolve_tracker
from revseg_agent.graphs.traces import Trace
from revseg_agent.graphs.video_queries import run_queries
from revseg_agent.io import append_jsonl, atomic_write_text, claim_output_dir, read_jsonl
from revseg_agent.masks_io import (
    Masks,
    MaskStreamWriter,
    RleMaskTrack,
    encode_rle,
    read_masks_json,
    write_mask_png,
)
from revseg_agent.settings import DEFAULT_GROUP_SIZE
from revseg_agent.tools.base import Tracker, TrackPrompt, stream_group
from revseg_agent.video import DEFAULT_NUM_FRAMES, Video, frame_files, open_video, uniform_indices

logger = logging.getLogger(__name__)

RECORDS = "records.jsonl"

#: An expression's masks, its trace (None for a baseline) and its record so far.
_Outcome = tuple[Masks, Trace | None, dict[str, Any]]

#: Runs units of work (a video's expressions, or one expression) somewhere and yields their
#: records as they finish (any order).
Executor = Callable[[list[list[Sample]], Path], Iterator[dict[str, Any]]]


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Finished expressions by key (a torn last line, from a kill mid-write, is dropped)."""
    return {record["key"]: record for record in read_jsonl(path)}


def _link_frames(bench: Benchmark, sample: Sample, work: Path) -> Path:
    """A folder holding exactly the sample's frames, in order (symlinks, nothing copied), named
    for its video: every expression of the video, alone or together, on any worker, reads (and
    its trace records) the same folder. Made once, atomically; later calls reuse it."""
    source = bench.frames_dir(sample)
    files = frame_files(source)
    missing = [f for f in sample.frames if f not in files]
    if missing:
        raise FileNotFoundError(f"{sample.key}: frames missing in {source}: {missing[:3]}")
    wanted = sorted(files[name].name for name in sample.frames)
    digest = hashlib.sha256("\0".join(sample.frames).encode()).hexdigest()[:8]
    folder = work / f"{sample.video}-{digest}"
    if folder.is_dir() and sorted(p.name for p in folder.iterdir()) == wanted:
        return folder
    work.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=work))
    for name in sample.frames:
        (tmp / files[name].name).symlink_to(files[name].resolve())
    try:
        tmp.rename(folder)
    except OSError:  # made meanwhile by another worker (or left incomplete by a killed run)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder.is_dir() and sorted(p.name for p in folder.iterdir()) == wanted):
            shutil.rmtree(folder, ignore_errors=True)
            return _link_frames(bench, sample, work)
    return folder


def _write_predictions(bench: Benchmark, pred_root: Path, sample: Sample, masks: Masks) -> None:
    """All frames of one expression, decoded and written one at a time, swapped into place in
    one rename."""
    final = bench.prediction_dir(pred_root, sample)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        if len(sample.frames) != masks.num_frames:
            raise ValueError(f"{sample.key}: {masks.num_frames} masks for {len(sample.frames)} frames")
        for i, name in enumerate(sample.frames):
            write_mask_png(tmp / f"{name}.png", masks.frame(i), value=bench.prediction_value)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tracked(tracker: Tracker, video: Video, prompts: Sequence[TrackPrompt | None]) -> list[RleMaskTrack]:
    """Baselines' masks, one pass for all prompts, encoded as the tracker streams them (an
    expression without a prompt gets an empty prediction)."""
    given = [i for i, prompt in enumerate(prompts) if prompt is not None]
    writers = {i: MaskStreamWriter(video.num_frames, video.info.height, video.info.width) for i in given}
    for k, frame in stream_group(tracker, video, [prompts[i] for i in given]):  # type: ignore[misc]
        writers[given[k]].add(frame)
    return [writers[i].track() if i in writers else _empty(video) for i in range(len(prompts))]


def _empty(video: Video) -> RleMaskTrack:
    """An empty prediction for every frame (one RLE shared by all)."""
    h, w = video.info.height, video.info.width
    return RleMaskTrack(h, w, [encode_rle(np.zeros((h, w), bool))] * video.num_frames)


class EvalRunner:
    """Runs one benchmark split into an output folder. `context` runs the graph; `baseline`
    (oracle / random-keyframe / centre-box) skips the policy and prompts `tracker` directly."""

    def __init__(
        self,
        bench: Benchmark,
        out_dir: str | Path,
        *,
        context: Context | None = None,
        tracker: Tracker | str | None = None,
        baseline: str | None = None,
        num_frames: int = DEFAULT_NUM_FRAMES,
        missing: MissingRule | None = None,
        workers: int = 1,
        per_expression: bool = False,
        group_size: int = DEFAULT_GROUP_SIZE,
    ) -> None:
        """`workers` > 1 runs that many units (videos) at once (threads): worth it with a served
        policy, which batches concurrent requests; local models serialise their own calls.
        `group_size` bounds the expressions of a video run together (memory of a pass)."""
        if (context is None) == (baseline is None):
            raise ValueError("give either a context (run the graph) or a baseline")
        if baseline is not None and tracker is None:
            raise ValueError("a baseline needs a tracker")
        self.bench = bench
        self.out = Path(out_dir)
        self.context = context
        self.tracker = tracker
        self.baseline = baseline
        self.num_frames = context.num_frames if context is not None else num_frames
        self.missing: MissingRule = missing or DEFAULT_MISSING[bench.name]
        self.graph = build_graph() if context is not None else None
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self.workers = workers
        self.per_expression = per_expression
        self.group_size = group_size

    def run(
        self, *, limit: int | None = None, progress: bool = True, executor: Executor | None = None
    ) -> dict[str, Any]:
        """Run every expression without a record, then summarise. `executor` runs them
        elsewhere (e.g. `eval.distributed.RayExecutor`); by default they run in this process
        (`workers` threads). Records are written here, whichever executor ran them."""
        claim_output_dir(self.out, "eval")
        work = self.out / ".work"
        records_path = self.out / RECORDS
        done = read_records(records_path)
        samples = self.bench.samples()[:limit] if limit else self.bench.samples()
        todo = [s for s in samples if s.key not in done]
        bar = tqdm(
            total=len(samples),
            initial=len(samples) - len(todo),
            desc=f"eval {self.bench.name}",
            unit="expr",
            disable=not progress,
        )
        run = executor or self._in_process
        try:
            for record in run(self.units(todo), work):  # only this thread appends: whole lines, no lock
                append_jsonl(records_path, record)
                done[record["key"]] = record
                bar.update(1)
        finally:
            bar.close()  # an error message then starts on a line of its own
        shutil.rmtree(work, ignore_errors=True)
        return self.finish([done[s.key] for s in samples])

    def units(self, samples: Sequence[Sample]) -> list[list[Sample]]:
        """The units of work: each video's expressions in dataset order, `group_size` at a time
        (one expression each with `per_expression`)."""
        if self.per_expression:
            return [[sample] for sample in samples]
        by_video: dict[tuple[str, tuple[str, ...]], list[Sample]] = {}
        for sample in samples:
            by_video.setdefault((sample.video, tuple(sample.frames)), []).append(sample)
        return [
            group[i : i + self.group_size]
            for group in by_video.values()
            for i in range(0, len(group), self.group_size)
        ]

    def _in_process(self, units: list[list[Sample]], work: Path) -> Iterator[dict[str, Any]]:
        if self.workers == 1:
            for unit in units:
                yield from self.run_unit(unit, work)
            return

        def whole(unit: list[Sample]) -> list[dict[str, Any]]:
            return list(self.run_unit(unit, work))

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(whole, unit) for unit in units]
            try:
                for future in as_completed(futures):
                    yield from future.result()
            except BaseException:
                for future in futures:  # what has not started stays for the resumed run
                    future.cancel()
                raise

    def run_unit(self, samples: Sequence[Sample], work: Path) -> Iterator[dict[str, Any]]:
        """The records of one unit (expressions of one video), each yielded once its predictions
        and trace are in place."""
        if len(samples) == 1:
            yield self.run_sample(samples[0], work)
            return
        started = time.time()
        frames = _link_frames(self.bench, samples[0], work / "frames")
        if self.baseline is not None:
            outcomes = self._baseline_video(samples, frames)
        else:
            outcomes = self._graph_video(samples, frames, work / "artifacts" / samples[0].key)
        seconds = (time.time() - started) / len(samples)  # the pass is shared: each its share
        for sample, (masks, trace, record) in zip(samples, outcomes, strict=True):
            yield self._complete(sample, self.bench.ground_truth(sample), masks, trace, record, seconds)

    def run_sample(self, sample: Sample, work: Path) -> dict[str, Any]:
        """One expression on its own: predictions and trace written in place; returns its record."""
        started = time.time()
        frames = _link_frames(self.bench, sample, work / "frames")
        gt = self.bench.ground_truth(sample)  # decoded once: the baseline's prompt and the score
        if self.baseline is not None:
            ((masks, trace, record),) = self._baseline_video([sample], frames, truths=[gt])
        else:
            assert self.context is not None and self.graph is not None
            # a copy per expression: concurrent workers must not share one artifacts folder
            context = dataclasses.replace(self.context, artifacts_dir=work / "artifacts")
            state = self.graph.invoke({"video_path": str(frames), "query": sample.text}, context=context)
            masks, trace, record = self._graph_outcome(sample, state, context, open_video(frames))
        return self._complete(sample, gt, masks, trace, record, time.time() - started)

    def _baseline_video(
        self, samples: Sequence[Sample], frames: Path, *, truths: Sequence[Any] | None = None
    ) -> list[_Outcome]:
        """A baseline's prompts (from the ground truth) for each expression, tracked in one pass.
        A video's truths are not held together: each is decoded for its prompt and again when its
        expression is scored, unless `truths` (one expression's, already decoded) are given."""
        assert self.baseline is not None and self.tracker is not None
        video = open_video(frames)
        sampled = uniform_indices(video.num_frames, self.num_frames)
        prompts: list[TrackPrompt | None] = []
        for k, sample in enumerate(samples):
            gt = truths[k] if truths is not None else self.bench.ground_truth(sample)
            if gt is None:
                raise ValueError(f"the {self.baseline} baseline needs ground truth ({sample.key} has none)")
            prompt = baseline_prompt(self.baseline, sample.key, gt, sampled)
            prompts.append(TrackPrompt(prompt[0], tuple(prompt[1])) if prompt is not None else None)
            del gt
        tracks = _tracked(resolve_tracker(self.tracker), video, prompts)
        return [
            (
                masks,
                None,
                {"key": s.key, "baseline": self.baseline, "keyframe_index": p.frame_index if p else None},
            )
            for s, p, masks in zip(samples, prompts, tracks, strict=True)
        ]

    def _graph_video(self, samples: Sequence[Sample], frames: Path, artifacts: Path) -> list[_Outcome]:
        """The video's expressions through the graph together (`graphs.video_queries`)."""
        assert self.context is not None
        context = dataclasses.replace(self.context, artifacts_dir=artifacts)
        states = run_queries(frames, [s.text for s in samples], context, group_size=self.group_size)
        video = open_video(frames)
        return [
            self._graph_outcome(s, state, context, video) for s, state in zip(samples, states, strict=True)
        ]

    def _graph_outcome(
        self, sample: Sample, state: dict[str, Any], context: Context, video: Video
    ) -> _Outcome:
        trace = trace_from_state(state, context)
        raise_if_out_of_memory(trace)  # no record: a resumed run with another knob redoes it
        record: dict[str, Any] = {"key": sample.key, "baseline": None}
        if trace.ok and trace.result.masks_path:
            masks: Masks = read_masks_json(trace.result.masks_path)
        else:  # the chain failed: an empty prediction, scored as such
            masks = _empty(video)
            record["chain_error"] = trace.error.code if trace.error else "incomplete"
        return masks, trace, record

    def _complete(
        self,
        sample: Sample,
        gt: Any,
        masks: Masks,
        trace: Trace | None,
        record: dict[str, Any],
        seconds: float,
    ) -> dict[str, Any]:
        """Predictions and trace written, then the record scored."""
        if trace is not None:
            trace_path = self.out / "traces" / f"{sample.key}.json"
            trace.save(trace_path)
            record["trace"] = str(trace_path.relative_to(self.out))
        _write_predictions(self.bench, self.out / "predictions", sample, masks)
        if gt is not None:  # scoring compares whole stacks: decoded only here, beside the truth
            result = score_sample(
                sample, gt, masks.masks, missing=self.missing, revos=revos_truth(self.bench, sample)
            )
            if trace is not None and result.counted:
                record.update(chain_diagnostics(trace, gt))
        else:
            result = score_sample(sample, None, None, missing=self.missing)
        record.update(result.model_dump())
        record["seconds"] = round(seconds, 3)
        return record

    def finish(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        fields = set(ExpressionResult.model_fields)
        results = [ExpressionResult(**{k: v for k, v in r.items() if k in fields}) for r in records]
        summary = summarise(self.bench.name, results, missing=self.missing)
        summary["baseline"] = self.baseline
        summary["diagnostics"] = aggregate([r for r in records if r.get("J") is not None])
        summary["expressions"] = records
        atomic_write_text(self.out / "results.json", json.dumps(summary, indent=2))
        atomic_write_text(self.out / "expressions.csv", expressions_csv(summary))
        zip_predictions(self.out / "predictions", self.out / "submission.zip")
        return summary
