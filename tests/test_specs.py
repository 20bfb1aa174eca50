"""Policy and tracker specs are parsed in one place (`revseg_agent.specs`), and a trace records one
name for a policy whichever way the run was started (CLI, served graph, evaluation, UI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from revseg_agent.errors import InputError
from revseg_agent.specs import PolicySpec, TrackerSpec


@pytest.mark.parametrize(
    ("text", "kind", "served"),
    [
        ("revseg-tiny", "packaged", False),
        ("revseg-tiny-sft", "packaged", False),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "checkpoint", False),
        ("./runs/sft/policy", "checkpoint", False),
        ("served:http://127.0.0.1:8000/v1", "served", True),
        ("served:transformers+http://127.0.0.1:8000/v1#revseg-tiny", "served", True),
    ],
)
def test_policy_specs_say_how_they_load(text: str, kind: str, served: bool) -> None:
    spec = PolicySpec.parse(text)
    assert (spec.kind, spec.served, spec.name) == (kind, served, text)


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
    cli = trace_from_state(state, Context(policy=load_policy("revseg-tiny"), tracker="classical"))  # type: ignore[arg-type]
    served = ServedContext(policy="revseg-tiny", tracker="classical", include_trace=True)
    out = respond(state, Runtime(context=served))  # type: ignore[arg-type]
    assert (cli.policy, cli.tracker) == ("revseg-tiny", "classical")
    assert (out["trace"]["policy"], out["trace"]["tracker"]) == (cli.policy, cli.tracker)
