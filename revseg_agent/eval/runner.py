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
one it was working on, and never counts anything twice. A torn last line is discarded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
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
from revseg_agent.io import append_jsonl, atomic_write_text, claim_output_dir, read_jsonl
from revseg_agent.masks_io import (
    Masks,
    MaskStreamWriter,
    RleMaskTrack,
    encode_rle,
    read_masks_json,
    write_mask_png,
)
from revseg_agent.tools.base import Tracker, stream_masks
from revseg_agent.types import Box
from revseg_agent.video import DEFAULT_NUM_FRAMES, Video, frame_files, open_video, uniform_indices

logger = logging.getLogger(__name__)

RECORDS = "records.jsonl"

#: Runs expressions somewhere and yields their records as they finish (any order).
Executor = Callable[[list[Sample], Path], Iterator[dict[str, Any]]]


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Finished expressions by key (a torn last line, from a kill mid-write, is dropped)."""
    return {record["key"]: record for record in read_jsonl(path)}


def _link_frames(bench: Benchmark, sample: Sample, folder: Path) -> Path:
    """A folder holding exactly the sample's frames, in order (symlinks, nothing copied)."""
    source = bench.frames_dir(sample)
    files = frame_files(source)
    missing = [f for f in sample.frames if f not in files]
    if missing:
        raise FileNotFoundError(f"{sample.key}: frames missing in {source}: {missing[:3]}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in sample.frames:
        (folder / files[name].name).symlink_to(files[name].resolve())
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


def _tracked(tracker: Tracker, video: Video, prompt: tuple[int, list[Box]]) -> RleMaskTrack:
    """A baseline's masks, encoded as the tracker streams them."""
    writer = MaskStreamWriter(video.num_frames, video.info.height, video.info.width)
    for frame in stream_masks(tracker, video, frame_index=prompt[0], boxes=prompt[1]):
        writer.add(frame)
    return writer.track()


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
    ) -> None:
        """`workers` > 1 runs that many expressions at once (threads): worth it with a served
        policy, which batches concurrent requests; local models serialise their own calls."""
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
        self.workers = workers

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
            for record in run(todo, work):  # only this thread appends: whole lines, no lock
                append_jsonl(records_path, record)
                done[record["key"]] = record
                bar.update(1)
        finally:
            bar.close()  # an error message then starts on a line of its own
        shutil.rmtree(work, ignore_errors=True)
        return self.finish([done[s.key] for s in samples])

    def _in_process(self, todo: list[Sample], work: Path) -> Iterator[dict[str, Any]]:
        if self.workers == 1:
            for sample in todo:
                yield self.run_sample(sample, work)
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(self.run_sample, sample, work) for sample in todo]
            try:
                for future in as_completed(futures):
                    yield future.result()
            except BaseException:
                for future in futures:  # what has not started stays for the resumed run
                    future.cancel()
                raise

    def run_sample(self, sample: Sample, work: Path) -> dict[str, Any]:
        """One expression: predictions and trace written in place; returns its record."""
        started = time.time()
        gt = self.bench.ground_truth(sample)
        frames = _link_frames(self.bench, sample, work / "frames" / sample.key)
        video = open_video(frames)
        trace: Trace | None = None
        record: dict[str, Any] = {"key": sample.key, "baseline": self.baseline}
        if self.baseline is not None:
            if gt is None:
                raise ValueError(f"the {self.baseline} baseline needs ground truth ({sample.key} has none)")
            sampled = uniform_indices(video.num_frames, self.num_frames)
            prompt = baseline_prompt(self.baseline, sample.key, gt, sampled)
            assert self.tracker is not None
            tracker = resolve_tracker(self.tracker)
            masks = _tracked(tracker, video, prompt) if prompt is not None else _empty(video)
            record["keyframe_index"] = prompt[0] if prompt else None
        else:
            assert self.context is not None and self.graph is not None
            # a copy per expression: concurrent workers must not share one artifacts folder
            context = dataclasses.replace(self.context, artifacts_dir=work / "artifacts")
            state = self.graph.invoke({"video_path": str(frames), "query": sample.text}, context=context)
            trace = trace_from_state(state, context)
            raise_if_out_of_memory(trace)  # no record: a resumed run with another knob redoes it
            if trace.ok and trace.result.masks_path:
                masks = read_masks_json(trace.result.masks_path)
            else:  # the chain failed: an empty prediction, scored as such
                masks = _empty(video)
                record["chain_error"] = trace.error.code if trace.error else "incomplete"
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
        record["seconds"] = round(time.time() - started, 3)
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
