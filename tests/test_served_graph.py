"""The graph served by a real `langgraph dev` server, driven by LangGraph's own client.

One server on a free loopback port for the module (inmem runtime, no browser, no analytics, no
reload), the tiny Qwen2.5-VL checkpoint as the policy spec and the weight-free tracker.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from revseg_agent.access import ALLOWED_DIRS_ENV

from .conftest import free_port, rss_mb, server_process

pytest.importorskip("langgraph_api", reason="the serve extra (langgraph-cli[inmem]) is not installed")
from langgraph_sdk import get_sync_client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[1]
#: The module server's process id and log file (for the load test).
SERVER: dict[str, Any] = {}
NODES_AND_RESPOND = [
    "sample_frames",
    "semantic_interpretation",
    "temporal_evidence_selection",
    "spatial_grounding",
    "track",
    "respond",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("the langgraph CLI is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {
        **os.environ,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
    }
    # the server reads videos, checkpoints and writes artifacts only under this session's temp root
    env[ALLOWED_DIRS_ENV] = str(tmp_path_factory.getbasetemp())
    args = [cli, "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload"]
    url = f"http://127.0.0.1:{port}"
    with server_process(args, f"{url}/ok", log, cwd=ROOT, env=env) as proc:
        SERVER.update(pid=proc.pid, log=log)
        yield url


def _context(policy_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "policy": str(policy_dir),
        "tracker": "classical",
        "on_parse_failure": "fallback",
        "max_attempts": 1,
        "num_frames": 4,
        "sampling": {"max_new_tokens": 8},
        **extra,
    }


def test_a_streamed_run_gives_one_update_per_node(
    server: str, tiny_policy_dir: Path, demo_clip: Path
) -> None:
    client = get_sync_client(url=server)
    nodes = []
    for part in client.runs.stream(
        None,
        "revseg",
        input={"video_path": str(demo_clip), "query": "the red square"},
        context=_context(tiny_policy_dir),
        stream_mode="updates",
    ):
        assert part.event != "error", part.data
        if part.event == "updates":
            nodes += list(part.data)
    assert nodes == NODES_AND_RESPOND


def test_an_interrupted_run_is_edited_and_resumed(
    server: str, tiny_policy_dir: Path, demo_clip: Path
) -> None:
    client = get_sync_client(url=server)
    thread = client.threads.create()
    context = _context(tiny_policy_dir)
    client.runs.wait(
        thread["thread_id"],
        "revseg",
        input={"video_path": str(demo_clip), "query": "the red square"},
        context=context,
        interrupt_before=["spatial_grounding"],
    )
    state = client.threads.get_state(thread["thread_id"])
    assert state["next"] == ["spatial_grounding"]
    client.threads.update_state(thread["thread_id"], {"keyframe_index": 5, "description": "the red block"})
    out = client.runs.wait(thread["thread_id"], "revseg", input=None, context=context)
    assert isinstance(out, dict) and out["error"] is None
    assert out["keyframe_index"] == 5 and out["description"] == "the red block"
    assert out["keyframe_timestamp"] == round(5 / 12.0, 4)  # recomputed from the edited index
    assert len(out["masks"]) == 24  # COCO RLE per frame: the client needs no server disk


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"video_path": "missing"}, "video not found"),
        ({"query": "   "}, "the query is empty"),
        ({"tracker": "magic"}, "unknown tracker spec 'magic'"),
        ({"video_path": "/etc/passwd"}, "video /etc/passwd is outside the folders this server may read"),
        ({"policy": "/opt/other-model"}, "policy checkpoint /opt/other-model is outside the folders"),
    ],
)
def test_bad_input_reaches_the_client(
    server: str, tiny_policy_dir: Path, demo_clip: Path, change: dict[str, str], message: str
) -> None:
    client = get_sync_client(url=server)
    inputs = {"video_path": str(demo_clip), "query": "the red square"}
    context = _context(tiny_policy_dir)
    for key, value in change.items():
        if value == "missing":  # inside the server's folders, but not there
            value = str(demo_clip.parent / "no-such-video.mp4")
        (context if key in {"tracker", "policy"} else inputs)[key] = value
    out = client.runs.wait(None, "revseg", input=inputs, context=context)
    assert isinstance(out, dict) and message in out["error"]["message"], out
    assert out["error"]["node"] == "sample_frames"  # checked before any model was asked


def test_two_concurrent_cold_runs_succeed(
    server: str, tmp_path: Path, demo_clip: Path, tiny_policy_dir: Path
) -> None:
    """A checkpoint no run has loaded yet, asked for by two runs at once: loaded once, both run."""
    cold = tmp_path / "cold-policy"
    shutil.copytree(tiny_policy_dir, cold)
    client = get_sync_client(url=server)

    def run(_: int) -> Any:
        return client.runs.wait(
            None,
            "revseg",
            input={"video_path": str(demo_clip), "query": "the red square"},
            context=_context(cold),
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        outs = list(pool.map(run, range(2)))
    assert all(isinstance(o, dict) and o["error"] is None and len(o["masks"]) == 24 for o in outs), outs


def test_schemas_describe_input_output_and_context(server: str) -> None:
    client = get_sync_client(url=server)
    (assistant,) = client.assistants.search(graph_id="revseg")
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    assert set(schemas["input_schema"]["properties"]) == {"video_path", "query"}
    assert {"keyframe_index", "boxes", "masks", "trace_summary", "error"} <= set(
        schemas["output_schema"]["properties"]
    )
    assert {"policy", "tracker", "num_frames", "on_parse_failure"} <= set(
        schemas["context_schema"]["properties"]
    )


def test_the_server_writes_artifacts_and_reads_edited_paths_only_under_its_folders(
    server: str, tiny_policy_dir: Path, demo_clip: Path
) -> None:
    client = get_sync_client(url=server)
    inputs = {"video_path": str(demo_clip), "query": "the red square"}
    elsewhere = Path(tempfile.mkdtemp(dir="/var/tmp"))  # outside the server's folders
    try:
        context = _context(tiny_policy_dir, artifacts_dir=str(elsewhere))
        out = client.runs.wait(None, "revseg", input=inputs, context=context)
        assert f"artifacts_dir {elsewhere} is outside the folders" in out["error"]["message"], out
        assert list(elsewhere.iterdir()) == []  # nothing written there
    finally:
        shutil.rmtree(elsewhere)
    thread = client.threads.create()
    context = _context(tiny_policy_dir)
    client.runs.wait(thread["thread_id"], "revseg", input=inputs, context=context, interrupt_before=["track"])
    client.threads.update_state(thread["thread_id"], {"video_path": "/etc/hostname"})  # edited while paused
    out = client.runs.wait(thread["thread_id"], "revseg", input=None, context=context)
    assert "video /etc/hostname is outside the folders" in out["error"]["message"], out


def test_four_clients_running_four_runs_each_get_the_sequential_results(
    server: str, tmp_path: Path, demo_clip: Path, tiny_policy_dir: Path
) -> None:
    """4 concurrent clients x 4 runs each on a checkpoint no run has loaded yet: every run
    finishes, each output equals the same run made alone, the checkpoint is loaded once (the
    registry's one "loading policy" line in the server's log) and the server's memory after 16
    runs is within 300 MB of what it was after the first (bounded loops on loopback)."""
    cold = Path(shutil.copytree(tiny_policy_dir, tmp_path / "load-policy"))
    queries = ["the red square", "the blue circle", "the shape moving right", "the shape moving down"]
    loads = f"loading policy {cold}"

    def run(query: str) -> dict[str, Any]:
        out = get_sync_client(url=server).runs.wait(
            None, "revseg", input={"video_path": str(demo_clip), "query": query}, context=_context(cold)
        )
        assert isinstance(out, dict) and out["error"] is None, out
        return {k: out[k] for k in ("keyframe_index", "description", "boxes", "masks")}

    alone = {query: run(query) for query in queries}
    rss_first = rss_mb(SERVER["pid"], children=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda q: [run(q) for _ in range(4)], queries))
    rss_all = rss_mb(SERVER["pid"], children=True)
    for query, runs in zip(queries, together, strict=True):
        assert runs == [alone[query]] * 4, query
    assert SERVER["log"].read_text().count(loads) == 1
    print(f"server RSS after the first runs {rss_first:.0f} MB, after all {rss_all:.0f} MB")
    assert rss_all - rss_first < 300, (rss_first, rss_all)
