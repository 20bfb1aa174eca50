"""`revseg train plan`: the memory arithmetic of a recipe, the shipped recipes' plans, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from revseg_agent.app.cli import main
from revseg_agent.errors import InputError
from revseg_agent.training.plan import GIB, check_fits, model_shape, plan_memory
from revseg_agent.training.recipe import Recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
FULL_7B = RECIPES / "revseg-qwen2.5-vl-7b.yaml"
LORA_7B = RECIPES / "revseg-qwen2.5-vl-7b-lora.yaml"
PARAMS_7B = 8_292_166_656  # Qwen2.5-VL-7B-Instruct, as its model card counts


@pytest.fixture(scope="module")
def shape_7b():  # type: ignore[no-untyped-def]
    return model_shape("Qwen/Qwen2.5-VL-7B-Instruct", ["q_proj", "k_proj", "v_proj", "o_proj"], 16)


def test_the_7b_shape_is_the_released_one(shape_7b) -> None:  # type: ignore[no-untyped-def]
    assert shape_7b.params == PARAMS_7B
    assert (shape_7b.hidden, shape_7b.layers, shape_7b.kv_width, shape_7b.vocab) == (3584, 28, 512, 152064)
    # r x (in + out) over q (3584->3584), k and v (3584->512), o (3584->3584), 28 layers
    assert shape_7b.lora_params == 16 * 28 * (2 * 7168 + 2 * 4096)


def test_full_fine_tuning_arithmetic_on_one_and_eight_processes(shape_7b) -> None:  # type: ignore[no-untyped-def]
    recipe = Recipe.load(FULL_7B)
    one = plan_memory(recipe, num_processes=1, shape=shape_7b)
    p = PARAMS_7B / GIB
    assert one.rows["weights"] == pytest.approx(2 * p)  # bf16
    assert one.rows["gradients"] == pytest.approx(2 * p)
    assert one.rows["master weights"] == pytest.approx(4 * p)  # fp32 copies
    assert one.rows["optimizer (AdamW)"] == pytest.approx(8 * p)  # two fp32 moments
    assert one.rows["reference"] == pytest.approx(2 * p)
    before_activations = sum(
        one.rows[k] for k in ("weights", "gradients", "master weights", "optimizer (AdamW)", "reference")
    )
    assert (
        before_activations == pytest.approx(18 * p) and 137 < before_activations < 140
    )  # the issue's ~137 GB
    assert not one.fits and "ZeRO stage 2 on one process shards nothing" in one.notes
    eight = plan_memory(recipe, num_processes=8, shape=shape_7b)
    assert eight.rows["gradients"] == pytest.approx(2 * p / 8)  # ZeRO-2 shards gradients ...
    assert eight.rows["optimizer (AdamW)"] == pytest.approx(8 * p / 8)  # ... and optimizer states
    assert eight.rows["master weights"] == pytest.approx(4 * p / 8)
    assert eight.rows["weights"] == one.rows["weights"]  # ... but not the weights
    assert eight.fits and eight.peak_gib < 70
    assert eight.global_queries == 16 and eight.group_size == 8  # the paper's global batch


def test_lora_fits_one_gpu_with_the_papers_batch(shape_7b) -> None:  # type: ignore[no-untyped-def]
    plan = plan_memory(Recipe.load(LORA_7B), num_processes=1, shape=shape_7b)
    assert plan.rows["reference"] == 0.0 and plan.rows["master weights"] == 0.0
    assert plan.rows["LoRA adapters"] == pytest.approx(shape_7b.lora_params * 4 / GIB)
    assert plan.fits and plan.global_queries == 16


def test_gradient_checkpointing_is_what_makes_the_activations_fit(shape_7b) -> None:  # type: ignore[no-untyped-def]
    recipe = Recipe.load(FULL_7B)
    without = recipe.model_copy(update={"gradient_checkpointing": False})
    on = plan_memory(recipe, num_processes=8, shape=shape_7b).rows["activations"]
    off = plan_memory(without, num_processes=8, shape=shape_7b).rows["activations"]
    assert off > 5 * on


def test_a_plan_that_cannot_fit_is_refused_with_its_numbers(
    shape_7b, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import revseg_agent.training.plan as plan_module

    monkeypatch.setattr(plan_module, "model_shape", lambda *a, **k: shape_7b)
    with pytest.raises(
        InputError, match=r"cannot fit: 1\d\d\.\d GiB per GPU needed, 67\.1 GiB usable of 74\.5"
    ):
        check_fits(Recipe.load(FULL_7B), num_processes=1, gpu_memory_gb=80)
    assert check_fits(Recipe.load(FULL_7B), num_processes=8, gpu_memory_gb=80).fits


@pytest.mark.parametrize(
    ("recipe", "processes", "code"),
    [(FULL_7B, 1, 1), (FULL_7B, 8, 0), (LORA_7B, 1, 0), (RECIPES / "tiny-cpu.yaml", 1, 0)],
)
def test_cli_plan(recipe: Path, processes: int, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "plan", "--config", str(recipe), "--num-processes", str(processes)]) == code
    out = capsys.readouterr().out
    assert "per-GPU memory plan" in out and "global batch" in out
    assert ("DOES NOT FIT" in out) == (code == 1)


def test_a_plan_keeps_headroom(shape_7b) -> None:  # type: ignore[no-untyped-def]
    """ZeRO-2 on 8 x 80 GB: a peak near the whole memory is refused unless the headroom allows it."""
    recipe = Recipe.load(FULL_7B)
    plan = plan_memory(recipe, num_processes=8, shape=shape_7b)
    assert plan.usable_gib == pytest.approx(plan.available_gib * 0.9)
    tight = plan.peak_gib / 0.95 * 1e-9 * GIB  # GB of a GPU the peak fills to 95%
    assert not plan_memory(recipe, num_processes=8, shape=shape_7b, gpu_memory_gb=tight).fits
    assert plan_memory(recipe, num_processes=8, shape=shape_7b, gpu_memory_gb=tight, headroom=0.0).fits
    with pytest.raises(InputError, match="--headroom"):
        plan_memory(recipe, shape=shape_7b, headroom=1.0)


@pytest.mark.parametrize(
    ("frame_size", "tokens"),
    [((1080, 1920), 2691), ((480, 854), 17 * 30), ((112, 112), 16)],  # 1092x1932, 476x840, 112x112
)
def test_keyframe_tokens_follow_the_processor_budget_at_the_frame_size(
    shape_7b, frame_size: tuple[int, int], tokens: int
) -> None:  # type: ignore[no-untyped-def]
    from revseg_agent.training.plan import PROMPT_TEXT_TOKENS, image_tokens

    assert image_tokens(frame_size, shape_7b.image_budget) == tokens
    recipe = Recipe.load(FULL_7B)
    plan = plan_memory(recipe, num_processes=8, shape=shape_7b, frame_size=frame_size)
    video = recipe.num_frames * shape_7b.frame_tokens
    assert plan.sequence_tokens == PROMPT_TEXT_TOKENS + video + tokens + 2 * recipe.max_new_tokens


def test_the_plan_uses_the_loaders_dtype(shape_7b) -> None:  # type: ignore[no-untyped-def]
    """No dtype in the recipe: bf16 on a GPU (what the loader picks there), fp32 on the CPU."""
    recipe = Recipe.load(FULL_7B).model_copy(update={"dtype": None})
    p = PARAMS_7B / GIB
    assert plan_memory(recipe, shape=shape_7b).rows["weights"] == pytest.approx(2 * p)
    on_cpu = recipe.model_copy(update={"device": "cpu"})
    assert plan_memory(on_cpu, shape=shape_7b).rows["weights"] == pytest.approx(4 * p)


def test_the_data_frame_size_is_read_from_the_recipes_data(tmp_path: Path) -> None:
    from revseg_agent.synth import WorldSpec, write_world
    from revseg_agent.training.plan import data_frame_size
    from revseg_agent.training.recipe import BenchmarkData

    write_world(tmp_path / "world", WorldSpec(seed=1, train=1, valid=0, test=0))
    recipe = Recipe.load(FULL_7B).model_copy(
        update={"data": BenchmarkData(dataset="mevis", root=str(tmp_path / "world" / "train"))}
    )
    height, width = data_frame_size(recipe)  # type: ignore[misc]
    assert height > 0 and width > 0
    missing = recipe.model_copy(update={"data": BenchmarkData(dataset="mevis", root=str(tmp_path / "none"))})
    assert data_frame_size(missing) is None
