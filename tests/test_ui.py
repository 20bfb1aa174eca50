"""`revseg ui`: the browser page over the graph, driven through Gradio's own Python client as a
page would drive it, and rendered in headless Chromium at each stage."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from revseg_agent.policies.base import ChatMessage, TextPart
from revseg_agent.testing import BoxTracker, ScriptedPolicy

gradio = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from revseg_agent.app.ui.app import OUTPUT_NAMES, launch  # noqa: E402
from revseg_agent.app.ui.runs import RunBook  # noqa: E402

from .conftest import free_port, render_in_chromium, rss_mb  # noqa: E402

ROUND1 = (
    "<think>The square moves right.</think><answer>frame id: 3\nobject description: the red square</answer>"
)
ROUND2 = '```json\n[{"bbox_2d": [68, 100, 108, 140], "label": "the red square"}]\n```'
SAMPLED = [0, 3, 7, 10, 13, 16, 20, 23]  # 8 of the demo clip's 24 frames


def _reply(messages: Sequence[ChatMessage]) -> str:
    last = " ".join(p.text for p in messages[-1].content if isinstance(p, TextPart))
    return ROUND2 if "bbox" in last else ROUND1


class Page:
    """The served page and a client of its API; `call` returns the outputs by name."""

    def __init__(self, url: str, book: RunBook, policy: ScriptedPolicy) -> None:
        self.url, self.book, self.policy = url, book, policy
        self.client = gradio_client.Client(url, verbose=False)

    def call(self, endpoint: str, *args: Any) -> dict[str, Any]:
        out = self.client.predict(*args, api_name=endpoint)
        return dict(zip(OUTPUT_NAMES, out, strict=True))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    policy = ScriptedPolicy(reply=_reply)
    port = free_port()
    app = launch(
        tmp_path_factory.mktemp("ui"),
        policies={"scripted": policy},
        trackers={"box": BoxTracker()},
        port=port,
        block=False,
        num_frames=8,
    )
    try:
        yield Page(f"http://127.0.0.1:{port}/", app.revseg_book, policy)
    finally:
        app.close()


def _start(page: Page, video: Path, query: str = "the red square") -> dict[str, Any]:
    return page.call("/start", None, str(video), query, "scripted", "box")


def test_step_through_change_keyframe_description_and_box_then_resume(page: Page, demo_clip: Path) -> None:
    out = _start(page, demo_clip)
    run = out["run_json"]
    assert run["stage"] == "ready" and run["next_nodes"] == ["semantic_interpretation"]
    assert run["sampled_indices"] == SAMPLED and len(out["strip"]) == 8
    run_id = out["run_id"]

    page.call("/step", run_id)  # round 1
    out = page.call("/step", run_id)  # keyframe mapped
    run = out["run_json"]
    assert run["stage"] == "keyframe" and run["keyframe_index"] == 7 and out["keyframe"] == 7  # id 3
    assert "The square moves right." in out["thinking"] and "frame id: 3" in out["answer"]
    assert [c["caption"].endswith("KEYFRAME") for c in out["strip"]] == [k == 2 for k in range(8)]

    out = page.call("/set_keyframe", run_id, 20)
    assert out["run_json"]["keyframe_index"] == 20 and out["run_json"]["stage"] == "keyframe"
    assert out["strip"][6]["caption"].endswith("KEYFRAME")  # frame 20 is sampled id 7
    out = page.call("/set_description", run_id, "the red block")
    assert out["run_json"]["description"] == "the red block"

    out = page.call("/step", run_id)  # round 2 on the person's keyframe and description
    run = out["run_json"]
    assert run["stage"] == "box" and run["boxes"] == [[68.0, 100.0, 108.0, 140.0]]
    assert [out[k] for k in ("x1", "y1", "x2", "y2")] == [68, 100, 108, 140]
    assert "Detect the red block" in " ".join(
        p.text for p in page.policy.calls[-1].messages[-1].content if isinstance(p, TextPart)
    )
    assert out["keyframe_image"] and Path(out["keyframe_image"]).is_file()

    out = page.call("/set_box", run_id, 180, 100, 220, 140)
    assert out["run_json"]["boxes"] == [[180.0, 100.0, 220.0, 140.0]]
    out = page.call("/run", run_id)
    run = out["run_json"]
    assert run["stage"] == "tracked" and run["next_nodes"] == [] and run["error"] is None
    names = sorted(Path(p).name for p in out["downloads"])
    assert names == ["masks.json", "overlay.mp4", "trace.json"]
    files = {Path(p).name: Path(p) for p in out["downloads"]}
    from revseg_agent.masks_io import read_masks_json

    masks = read_masks_json(files["masks.json"]).masks
    assert masks.shape == (24, 240, 320)
    assert masks[:, 100:140, 180:220].all() and masks.sum() == 24 * 40 * 40  # the person's box
    trace = json.loads(files["trace.json"].read_text())
    assert [(e["key"], e["new"]) for e in trace["human_edits"]] == [
        ("keyframe_index", 20),
        ("description", "the red block"),
        ("boxes", [[180.0, 100.0, 220.0, 140.0]]),
    ]
    grounding = next(s for s in trace["steps"] if s["node"] == "spatial_grounding")
    assert grounding["visuals"]["keyframe"]["frame_indices"] == [20]
    assert out["overlay_frames"] and out["overlay_video"]
    capture = cv2.VideoCapture(out["overlay_video"])
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[1] == 320  # a video the page can play, one frame per video frame


@pytest.mark.parametrize(
    ("endpoint", "args", "message"),
    [
        ("/start", ("VIDEO", " ", "scripted", "box"), "the query is empty"),
        ("/start", ("", "q", "scripted", "box"), "no video"),
        ("/start", ("NOT_A_VIDEO", "q", "scripted", "box"), "cannot read video"),
        ("/start", ("/nowhere/clip.mp4", "q", "scripted", "box"), "video not found"),
        ("/open", ("0123456789abcdef",), "no run"),
        ("/open", ("../../etc",), "no run"),
        ("/step", ("",), "no run"),
    ],
)
def test_bad_input_is_a_message_in_the_page(
    page: Page, demo_clip: Path, tmp_path: Path, endpoint: str, args: tuple[Any, ...], message: str
) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    args = tuple({"VIDEO": str(demo_clip), "NOT_A_VIDEO": str(bad)}.get(a, a) for a in args)
    if endpoint == "/start":
        args = (None, *args)
    out = page.call(endpoint, *args)
    assert message in out["status"] and out["status"].startswith("⚠")
    assert _start(page, demo_clip)["run_json"]["stage"] == "ready"  # the server carries on


def test_bad_edits_are_refused_and_leave_the_run_as_it_was(page: Page, demo_clip: Path) -> None:
    run_id = _start(page, demo_clip)["run_id"]
    out = page.call("/set_box", run_id, 10, 10, 50, 50)
    assert "once round 2 has drawn one" in out["status"]
    page.call("/step", run_id)
    page.call("/step", run_id)
    out = page.call("/set_keyframe", run_id, 24)
    assert "outside the video's 24 frames" in out["status"] and out["run_json"]["keyframe_index"] == 7
    page.call("/step", run_id)
    out = page.call("/set_box", run_id, 300, 100, 340, 140)
    assert "outside the 320x240 frame" in out["status"]
    assert out["run_json"]["boxes"] == [[68.0, 100.0, 108.0, 140.0]] and out["run_json"]["edits"] == []


def test_concurrent_sessions_do_not_see_each_others_runs(page: Page, demo_clip: Path) -> None:
    results: dict[str, dict[str, Any]] = {}

    def session(query: str) -> None:
        own = Page(page.url, page.book, page.policy)  # a second browser: its own client
        out = own.call("/start", None, str(demo_clip), query, "scripted", "box")
        own.call("/step", out["run_id"])
        own.call("/step", out["run_id"])
        results[query] = own.call("/set_keyframe", out["run_id"], 5 if "left" in query else 9)

    threads = [threading.Thread(target=session, args=(q,)) for q in ("the left one", "the right one")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    left, right = results["the left one"]["run_json"], results["the right one"]["run_json"]
    assert left["run_id"] != right["run_id"]
    assert (left["query"], left["keyframe_index"]) == ("the left one", 5)
    assert (right["query"], right["keyframe_index"]) == ("the right one", 9)
    assert [e["new"] for e in left["edits"]] == [5] and [e["new"] for e in right["edits"]] == [9]


def test_runs_are_reopened_from_the_sqlite_file_after_a_restart(demo_clip: Path, tmp_path: Path) -> None:
    first = RunBook(
        tmp_path, policies={"scripted": ScriptedPolicy(reply=_reply)}, trackers={"box": BoxTracker()}
    )
    run = first.start(demo_clip, "the red square", policy="scripted", tracker="box")
    first.step(run.run_id)
    first.step(run.run_id)
    first.edit(run.run_id, "keyframe_index", 13)
    first.close()
    again = RunBook(
        tmp_path, policies={"scripted": ScriptedPolicy(reply=_reply)}, trackers={"box": BoxTracker()}
    )
    assert [r.run_id for r in again.runs()] == [run.run_id]
    view = again.view(run.run_id)
    assert (view.stage, view.keyframe_index, [e["new"] for e in view.edits]) == ("keyframe", 13, [13])
    assert again.run(run.run_id).stage == "tracked"


def _pixels_near(shot: Path, rgb: tuple[int, int, int], tolerance: int = 30) -> int:
    image = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB).astype(int)
    return int((np.abs(image - np.array(rgb)).max(axis=2) <= tolerance).sum())


def test_each_stage_renders_in_chromium(page: Page, demo_clip: Path, tmp_path: Path) -> None:
    """The page opened at `/?run=<id>` shows the run's frames, its box and its overlay."""
    from revseg_agent.app.ui.runs import KEYFRAME_RGB
    from revseg_agent.masks_io import BOX_RGB, OVERLAY_RGB

    shots = Path(os.environ.get("REVSEG_TEST_ARTIFACTS", tmp_path)) / "ui-screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    run_id = _start(page, demo_clip)["run_id"]

    def shot(stage: str) -> Path:
        return render_in_chromium(f"{page.url}?run={run_id}", shots / f"{stage}.png", size="1280,2600")

    ready = shot("ready")
    assert _pixels_near(ready, (230, 30, 30)) > 500  # the red square in the strip's thumbnails
    assert _pixels_near(ready, KEYFRAME_RGB, 8) < 50  # no keyframe yet
    page.call("/step", run_id)
    page.call("/step", run_id)
    assert _pixels_near(shot("keyframe"), KEYFRAME_RGB, 8) > 300  # the keyframe's red border
    page.call("/step", run_id)
    box = shot("box")
    assert _pixels_near(box, BOX_RGB, 20) > 200  # the box drawn on the keyframe
    assert _pixels_near(box, OVERLAY_RGB, 30) < 50  # no masks yet
    page.call("/run", run_id)
    assert _pixels_near(shot("tracked"), OVERLAY_RGB, 40) > 1000  # the mask overlay


def test_cli_serves_on_loopback_with_the_shipped_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from revseg_agent.app import cli
    from revseg_agent.app.ui import app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(app, "launch", lambda work, **kw: seen.update(work=work, **kw))
    assert cli.main(["ui", "--work", str(tmp_path / "w"), "--port", "7999"]) == 0
    assert (seen["host"], seen["port"], seen["num_frames"]) == ("127.0.0.1", 7999, 8)
    assert list(seen["policies"]) == ["revseg-tiny"] and list(seen["trackers"]) == ["classical"]
    assert cli.main(["ui", "--frames", "0"]) == cli.EXIT_BAD_INPUT
    assert cli.main(["ui", "--policy", str(tmp_path / "missing")]) == cli.EXIT_BAD_INPUT


# -- beyond loopback: a login, machine paths only under named folders, uploads capped ------------


def test_beyond_loopback_the_page_is_refused_without_a_login(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give a login"):
        launch(
            tmp_path,
            policies={"scripted": ScriptedPolicy(reply=_reply)},
            trackers={"box": BoxTracker()},
            host="0.0.0.0",
            block=False,
        )
    assert not (tmp_path / "runs.sqlite").exists()  # nothing was opened, nothing served


@pytest.fixture
def guarded_page(tmp_path: Path, demo_clip: Path) -> Iterator[tuple[str, Path]]:
    """A page with a login, machine paths only under `allowed/`, uploads up to the clip's size."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    port = free_port()
    app = launch(
        tmp_path / "work",
        policies={"scripted": ScriptedPolicy(reply=_reply)},
        trackers={"box": BoxTracker()},
        port=port,
        block=False,
        num_frames=8,
        auth=("ann", "s3cret"),
        allowed_dirs=[allowed],
        max_upload_mb=(demo_clip.stat().st_size + 1024) / 2**20,
    )
    try:
        yield f"http://127.0.0.1:{port}/", allowed
    finally:
        app.close()


def test_a_login_closes_the_page_and_its_api(guarded_page: tuple[str, Path], demo_clip: Path) -> None:
    import httpx

    url, _ = guarded_page
    assert httpx.get(url + "config").status_code == 401
    assert httpx.post(url + "gradio_api/upload", files={"files": ("c.mp4", b"x")}).status_code == 401
    with pytest.raises(Exception, match="credentials were not provided"):
        gradio_client.Client(url, verbose=False)
    client = gradio_client.Client(url, auth=("ann", "s3cret"), verbose=False)
    out = dict(
        zip(OUTPUT_NAMES, client.predict(None, "", "q", "scripted", "box", api_name="/start"), strict=True)
    )
    assert "no video" in out["status"]


def test_machine_paths_are_read_only_under_the_allowed_folders(
    guarded_page: tuple[str, Path], demo_clip: Path, tmp_path: Path
) -> None:
    import shutil

    url, allowed = guarded_page
    client = gradio_client.Client(url, auth=("ann", "s3cret"), verbose=False)

    def start(upload: Any, path: str) -> dict[str, Any]:
        answer = client.predict(upload, path, "the red square", "scripted", "box", api_name="/start")
        return dict(zip(OUTPUT_NAMES, answer, strict=True))

    inside = Path(shutil.copy(demo_clip, allowed / "clip.mp4"))
    (allowed / "link.mp4").symlink_to(demo_clip)  # inside by name, outside in fact
    for outside in (demo_clip, allowed / "link.mp4", allowed / ".." / "work" / ".." / ".." / "x.mp4"):
        out = start(None, str(outside))
        assert "is outside the folders this server may read" in out["status"] and not out["run_id"]
    assert start(None, str(inside))["run_json"]["stage"] == "ready"
    assert start(gradio_client.handle_file(str(demo_clip)), "")["run_json"]["stage"] == "ready"  # an upload


def test_an_upload_over_the_cap_is_refused_before_it_is_stored(
    guarded_page: tuple[str, Path], demo_clip: Path
) -> None:
    import httpx

    url, _ = guarded_page
    with httpx.Client(base_url=url) as http:
        assert http.post("login", data={"username": "ann", "password": "s3cret"}).status_code == 200
        big = demo_clip.read_bytes() + b"\0" * 4096
        refused = http.post("gradio_api/upload", files={"files": ("big.mp4", big)})
        assert refused.status_code == 413 and "maximum allowed size" in refused.text
        stored = http.post("gradio_api/upload", files={"files": ("clip.mp4", demo_clip.read_bytes())})
        assert stored.status_code == 200


# -- load: four sessions stepping at once ----------------------------------------------------------


@pytest.mark.slow
def test_four_sessions_stepping_at_once_finish_with_the_sequential_results(
    demo_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 browser sessions x 4 runs each, stepping node by node at the same time, with the shipped
    policy loaded by spec (a cold copy): every run ends tracked, each equals the same query run
    alone, the checkpoint is loaded once, and memory after 16 runs stays within 300 MB of what it
    was after the first 4."""
    import shutil

    from revseg_agent.graphs import registry

    cold = Path(shutil.copytree(registry.policy_source("revseg-tiny"), tmp_path / "policy"))
    builds: list[str] = []
    build = registry._build_policy
    monkeypatch.setattr(
        registry, "_build_policy", lambda spec, device: builds.append(spec) or build(spec, device)
    )
    port = free_port()
    app = launch(
        tmp_path / "work",
        policies={"tiny": str(cold)},
        trackers={"classical": "classical"},
        port=port,
        block=False,
        num_frames=4,
    )
    url = f"http://127.0.0.1:{port}/"
    queries = ["the red square", "the blue circle", "the shape moving right", "the shape moving down"]

    def session(query: str, rounds: int, alone: bool) -> list[dict[str, Any]]:
        client = Page(url, app.revseg_book, None)  # type: ignore[arg-type]

        def call(endpoint: str, *args: Any) -> dict[str, Any]:
            out = client.call(endpoint, *args)
            assert not out["status"].startswith("⚠"), (endpoint, out["status"])  # the page's error
            return out

        done = []
        for _ in range(rounds):
            run = call("/start", None, str(demo_clip), query, "tiny", "classical")
            for _node in range(12):
                if alone or run["run_json"]["stage"] in {"tracked", "failed"}:
                    break
                run = call("/step", run["run_id"])
            if alone:
                run = call("/run", run["run_id"])
            done.append(run["run_json"])
        return done

    def result(run: dict[str, Any]) -> tuple[Any, ...]:
        masks = Path(app.revseg_book.work_dir / "runs" / run["run_id"] / "outputs" / "masks.json")
        frames = json.loads(masks.read_text())["frames"]  # (its video_path is the run's own copy)
        return (run["stage"], run["keyframe_index"], run["description"], run["boxes"], frames)

    try:
        alone = {q: result(session(q, 1, alone=True)[0]) for q in queries}
        rss_after_first = rss_mb()
        with ThreadPoolExecutor(max_workers=4) as pool:
            together = dict(
                zip(queries, pool.map(lambda q: session(q, 4, alone=False), queries), strict=True)
            )
        rss_after_all = rss_mb()
    finally:
        app.close()
    assert all(r[0] == "tracked" for r in alone.values())
    for query, runs in together.items():
        assert len(runs) == 4 and [result(r) for r in runs] == [alone[query]] * 4, query
    assert builds == [str(cold)]  # loaded once, by the first run that asked
    print(f"RSS after the first runs {rss_after_first:.0f} MB, after all {rss_after_all:.0f} MB")
    assert rss_after_all - rss_after_first < 300, (rss_after_first, rss_after_all)
