"""Policy and tracker specs are parsed in one place (`revseg_agent.specs`), and a trace records one
name for a policy whichever way the run was started (CLI, served graph, evaluation, UI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from revseg_agent.errors import InputError
from revseg_agent.specs import PolicySpec, TrackerSpec


@pytest.mark.parametrize(
    ("text", "kind", "served", "name"),
    [
        ("revseg-tiny", "packaged", False, "revseg-tiny"),
        ("revseg-tiny-sft", "packaged", False, "revseg-tiny-sft"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "checkpoint", False, "Qwen/Qwen2.5-VL-7B-Instruct"),
        ("./runs/sft/policy", "checkpoint", False, "./runs/sft/policy"),
        # the server's first model, unknown until asked: the spec itself
        ("served:http://127.0.0.1:8000/v1", "served", True, "served:http://127.0.0.1:8000/v1"),
        ("served:http://127.0.0.1:8000/v1/#Qwen/Qwen2.5-VL-7B-Instruct", "served", True,
         "Qwen/Qwen2.5-VL-7B-Instruct @ http://127.0.0.1:8000/v1"),
        ("served:transformers+http://127.0.0.1:8000/v1#revseg-tiny", "served", True,
         "revseg-tiny @ http://127.0.0.1:8000/v1"),
    ],
)  # fmt: skip
def test_policy_specs_say_how_they_load_and_what_a_trace_calls_them(
    text: str, kind: str, served: bool, name: str
) -> None:
    spec = PolicySpec.parse(text)
    assert (spec.kind, spec.served, spec.name) == (kind, served, name)


def test_a_packaged_policy_loads_from_the_installation_and_others_as_given() -> None:
    assert (Path(PolicySpec.parse("revseg-tiny").source()) / "config.json").is_file()
    assert PolicySpec.parse("Qwen/Qwen2.5-VL-7B-Instruct").source() == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(ValueError, match="served"):
        PolicySpec.parse("served:http://127.0.0.1:8000/v1").source()
    with pytest.raises(InputError, match="empty"):
        PolicySpec.parse("  ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("classical", TrackerSpec("classical")),
        ("sam2:/ckpt/sam2.1_hiera_tiny.pt", TrackerSpec("sam2", checkpoint="/ckpt/sam2.1_hiera_tiny.pt")),
        (
            "sam2:/ckpt/t.pt:configs/sam2.1/sam2.1_hiera_t.yaml",
            TrackerSpec("sam2", checkpoint="/ckpt/t.pt", config="configs/sam2.1/sam2.1_hiera_t.yaml"),
        ),
        ("sam2-hub:", TrackerSpec("sam2-hub")),
        ("sam2-hub:facebook/sam2.1-hiera-tiny", TrackerSpec("sam2-hub", hub_id="facebook/sam2.1-hiera-tiny")),
    ],
)
def test_tracker_specs_parse_and_print_back(text: str, expected: TrackerSpec) -> None:
    spec = TrackerSpec.parse(text)
    assert spec == expected
    assert TrackerSpec.parse(spec.text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("magic", "unknown tracker spec 'magic'"),
        ("classical:x", "unknown tracker spec"),
        ("sam2", "needs a checkpoint"),
        ("sam2:", "needs a checkpoint"),
    ],
)
def test_bad_tracker_specs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        TrackerSpec.parse(text)


@pytest.mark.parametrize(
    ("kind", "checkpoint", "config", "text"),
    [
        ("classical", "/ignored.pt", None, "classical"),
        ("sam2", None, None, "sam2-hub:"),
        ("sam2", "/c.pt", None, "sam2:/c.pt:configs/sam2.1/sam2.1_hiera_l.yaml"),
        (
            "sam2",
            "/c.pt",
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            "sam2:/c.pt:configs/sam2.1/sam2.1_hiera_t.yaml",
        ),
    ],
)
def test_the_cli_and_ui_options_name_one_tracker_spec(
    kind: str, checkpoint: str | None, config: str | None, text: str
) -> None:
    assert TrackerSpec.from_options(kind, checkpoint=checkpoint, config=config).text == text


def test_a_trace_records_the_packaged_policy_by_its_spec_from_the_cli_and_the_served_graph() -> None:
    """The CLI loads `--policy revseg-tiny` and hands the graph the object; a served graph keeps
    the spec in its context. Both traces say `revseg-tiny` (the CLI's used to say the folder)."""
    from langgraph.runtime import Runtime

    from revseg_agent.graphs.context import Context
    from revseg_agent.graphs.pipeline import trace_from_state
    from revseg_agent.graphs.registry import load_policy
    from revseg_agent.graphs.served import ServedContext, respond

    state = {"video_path": "clip.mp4", "query": "the red square"}
    cli = trace_from_state(state, Context(policy=load_policy("revseg-tiny"), tracker="classical"))
    served = ServedContext(policy="revseg-tiny", tracker="classical", include_trace=True)
    out = respond(state, Runtime(context=served))  # type: ignore[arg-type]
    assert (cli.policy, cli.tracker) == ("revseg-tiny", "classical")
    assert (out["trace"]["policy"], out["trace"]["tracker"]) == (cli.policy, cli.tracker)


def test_every_kind_of_run_takes_the_chain_settings_from_one_declaration() -> None:
    """Context, the served context, RunSettings and EvalSpec inherit `ChainSettings`: the same
    fields with the same defaults, and a context built from any of them runs the same chain."""
    import dataclasses

    from revseg_agent.eval.spec import EvalSpec
    from revseg_agent.graphs.context import Context, RunSettings
    from revseg_agent.graphs.served import ServedContext
    from revseg_agent.policies.base import SamplingParams
    from revseg_agent.settings import ChainSettings

    chain = {f.name: f for f in dataclasses.fields(ChainSettings)}
    for kind in (Context, ServedContext, RunSettings, EvalSpec):
        assert issubclass(kind, ChainSettings)
        own = {f.name: f for f in dataclasses.fields(kind)}
        assert all(own[name] == chain[name] for name in chain), kind

    asked: dict[str, Any] = {
        "num_frames": 5,
        "max_attempts": 2,
        "on_parse_failure": "fallback",
        "round2_with_history": False,
    }
    served = ServedContext(policy="revseg-tiny", sampling={"max_new_tokens": 64}, **asked)  # type: ignore[arg-type]
    run = RunSettings(policy="revseg-tiny", sampling=SamplingParams(max_new_tokens=64), **asked)
    spec = EvalSpec(dataset="mevis", root=Path("r"), out=Path("o"), policy="revseg-tiny", **asked)
    again = EvalSpec.from_json(spec.to_json())
    contexts = [served.context, run.context(load=False), again.context(load=False)]
    for context in contexts:
        assert {k: getattr(context, k) for k in asked} == asked
    assert served.context.sampling == run.context(load=False).sampling == SamplingParams(max_new_tokens=64)
    assert EvalSpec.from_json(spec.to_json()) == spec
