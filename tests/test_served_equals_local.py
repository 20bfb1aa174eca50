"""`revseg segment` and `revseg eval` with `--policy served:...` give the local policy's results.

The server is a separate process speaking vLLM's protocol (`tests/vllm_standin.py`; vLLM does not
run on this CPU) serving the shipped `revseg-tiny` under its folder name, as `vllm serve <path>`
names it. Equal results rest on the visuals sized with the served checkpoint's own budgets
(`served.local_sizing`), the frames sent losslessly (PNG inside vLLM's `video/jpeg` form) and
retries seeded from what they ask (`Context.attempt_sampling`), not from the process's random
state (without that, the eval test fails: a retry drew other answers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from revseg_agent.app.cli import main
from revseg_agent.graphs.chats import round1_messages
from revseg_agent.graphs.context import Context
from revseg_agent.graphs.graph import build_graph
from revseg_agent.graphs.names import SEMANTIC_INTERPRETATION
from revseg_agent.graphs.registry import policy_source
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.synth import WorldSpec, write_world
from revseg_agent.testing import BoxTracker

from .vllm_standin import running

pytestmark = [pytest.mark.slow, pytest.mark.cross_process]


@pytest.fixture(scope="module")
def served_tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running(policy_source("revseg-tiny"), tmp_path_factory.mktemp("standin") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "world"
    write_world(out, WorldSpec(seed=3, train=1, valid=1, test=2))
    return out


def _records(out: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def test_eval_through_the_server_equals_the_local_run_expression_by_expression(
    served_tiny: str, world: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    # Answers cut at 48 new tokens: the longer round-1 answers do not parse, so sampled retries
    # (seeded from what they ask) are among the expressions, beside ones that parse at once.
    args = ["eval", "--dataset", "mevis", "--root", str(world / "test"), "--tracker", "classical"]
    args += ["--max-new-tokens", "48"]
    assert main([*args, "--out", str(tmp_path / "local"), "--policy", "revseg-tiny"]) == 0
    assert main([*args, "--out", str(tmp_path / "served"), "--policy", f"served:{served_tiny}"]) == 0
    local, served = _records(tmp_path / "local"), _records(tmp_path / "served")
    assert len(local) == 6 and served == local
    attempts = {int(r["round1_attempts"]) for r in local}
    assert 1 in attempts and max(attempts) > 1  # sampled retries among answers that parse at once
    results = [json.loads((tmp_path / n / "results.json").read_text()) for n in ("local", "served")]
    assert results[0]["J&F"] == results[1]["J&F"]


def test_segment_through_the_server_writes_the_local_masks(
    served_tiny: str, world: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    video = world / "test" / "JPEGImages" / "test00000"
    query = "find the blue square"
    outs = {}
    for name, policy in (("local", "revseg-tiny"), ("served", f"served:{served_tiny}")):
        outs[name] = tmp_path / name
        args = ["segment", str(video), query, "--out", str(outs[name]), "--policy", policy]
        assert main([*args, "--tracker", "classical", "--device", "cpu"]) == 0
    traces = [json.loads((outs[n] / "trace.json").read_text()) for n in ("local", "served")]
    assert [s.get("completion") for s in traces[0]["steps"]] == [
        s.get("completion") for s in traces[1]["steps"]
    ]
    assert (outs["local"] / "masks.json").read_bytes() == (outs["served"] / "masks.json").read_bytes()


def test_retries_do_not_depend_on_what_the_process_sampled_before(
    tiny_policy_dir: Path, demo_clip: Path, tmp_path: Path
) -> None:
    """A random policy's answers rarely parse, so its runs retry with sampling: the same run
    twice, with the process's random state moved in between, writes the same answers."""
    policy = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    context = Context(policy=policy, tracker=BoxTracker(), num_frames=4, on_parse_failure="fallback")
    inputs = {"video_path": str(demo_clip), "query": "the red square"}

    def answers() -> list[str]:
        state = build_graph().invoke(inputs, context=context)
        return [s["completion"] for s in state["steps"] if s.get("completion") is not None]

    first = answers()
    torch.rand(1000)  # what else the process did
    second = answers()
    assert first == second
    retries = [s for s in build_graph().invoke(inputs, context=context)["steps"] if s.get("attempt", 1) > 1]
    assert any(s["node"] == SEMANTIC_INTERPRETATION for s in retries)


@pytest.fixture(scope="module")
def served_random(tmp_path_factory: pytest.TempPathFactory, tiny_policy_dir: Path) -> Iterator[str]:
    """A tiny random-init checkpoint (no `revseg.json`: the default, floored frame timing)."""
    with running(tiny_policy_dir, tmp_path_factory.mktemp("standin") / "server.log") as url:
        yield url


def test_a_served_round_1_is_accepted_by_the_real_processor_with_the_local_timing(
    served_random: str, tiny_policy_dir: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    """`revseg segment` on a 3 s clip at 10 fps through the server: the stand-in hands each video
    to the checkpoint's HF processor with the request's `mm_processor_kwargs` and the loader's
    metadata, as vLLM does (a kwarg it refuses fails the run); what it derives is the local
    policy's `second_per_grid_ts`, and the 16 frame ids get 16 M-RoPE times."""
    import httpx

    from .test_frame_timing import round1_clip, temporal_positions, write_clip

    clip = write_clip(tmp_path / "clip.mp4", frames=30, fps=10.0)
    hook = served_random.removesuffix("/v1") + "/standin/second_per_grid_ts"
    before = len(httpx.get(hook).json())
    args = ["segment", str(clip), "the red square", "--out", str(tmp_path / "out"), "--frames", "16"]
    args += ["--tracker", "classical", "--device", "cpu", "--on-parse-failure", "fallback"]
    args += ["--max-attempts", "1", "--max-new-tokens", "8"]  # a random policy: its answers fall back
    assert main([*args, "--policy", f"served:{served_random}"]) == 0
    served = httpx.get(hook).json()[before:]
    local = QwenVLPolicy.from_pretrained(tiny_policy_dir, device="cpu")
    sixteen = round1_clip(clip)
    expected = local.prepare_inputs(round1_messages("q", [0.0] * 16), {"frames": sixteen})
    assert served and all(s == pytest.approx(expected["second_per_grid_ts"].tolist()) for s in served)
    assert len(temporal_positions(local, sixteen)) == 16
