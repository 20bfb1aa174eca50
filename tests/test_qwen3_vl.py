"""Qwen3-VL policies through the same chain: tiny random-init checkpoints shrunk from the released
Qwen3-VL-2B/4B configurations, loaded the way users load the real ones (`from_pretrained`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from revseg_agent.graphs.chats import FRAMES_REF, KEYFRAME_REF, round1_messages, round2_messages
from revseg_agent.parsing import BoxAnswer, parse_box_answer, to_frame_space
from revseg_agent.policies.base import ImageFrame, SamplingParams, VideoFrames
from revseg_agent.policies.families import QWEN2_5_VL, QWEN3_VL, family_of_checkpoint
from revseg_agent.policies.qwen import QwenVLPolicy
from revseg_agent.policies.tiny import build_tiny_qwen3_vl
from revseg_agent.synth.square_clip import demo_frames
from revseg_agent.training.sft import box_answer
from revseg_agent.types import Box

from .conftest import processor_reference_batch

pytestmark = pytest.mark.slow

FRAMES = demo_frames(16)
# 8 frames of a 24 fps video, every 10th: the prompt lists 0.0 s, 0.4 s, ... 2.9 s
CLIP = VideoFrames(frames=FRAMES[:8], frame_indices=list(range(0, 80, 10)), fps=24.0, total_num_frames=160)
TIMES = [i / 24.0 for i in CLIP.frame_indices]
ROUND1 = round1_messages("the red square", TIMES)


@pytest.fixture(scope="module")
def policy(tiny_qwen3_policy_dir: Path) -> QwenVLPolicy:
    return QwenVLPolicy.from_pretrained(tiny_qwen3_policy_dir, device="cpu")


@pytest.mark.parametrize("release", ["2B", "4B"])
def test_the_tiny_checkpoint_keeps_the_released_layout(release: str, tmp_path: Path) -> None:
    folder = build_tiny_qwen3_vl(tmp_path / release, released=release)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl"
    vision, text = config["vision_config"], config["text_config"]
    assert (vision["patch_size"], vision["spatial_merge_size"], vision["temporal_patch_size"]) == (16, 2, 2)
    assert vision["deepstack_visual_indexes"] and vision["num_position_embeddings"] == 2304
    assert text["rope_parameters"]["mrope_interleaved"] is True
    assert config["tie_word_embeddings"] is True
    assert (folder / "model.safetensors").is_file()
    assert family_of_checkpoint(folder) is QWEN3_VL
    policy = QwenVLPolicy.from_pretrained(folder, device="cpu")
    assert type(policy.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(policy.processor).__name__ == "Qwen3VLProcessor"
    assert (policy.family, policy.box_units) == (QWEN3_VL, "relative")


def test_the_mixture_of_experts_release_runs_the_chain_too(tmp_path: Path) -> None:
    """Qwen3-VL-30B-A3B's layout (`qwen3_vl_moe`, experts in every layer), shrunk: the same family,
    both rounds answered and replayable; the planner counts the release's 31.1B parameters."""
    from revseg_agent.training.plan import model_shape

    folder = build_tiny_qwen3_vl(tmp_path / "moe", released="30B-A3B")
    assert json.loads((folder / "config.json").read_text())["model_type"] == "qwen3_vl_moe"
    policy = QwenVLPolicy.from_pretrained(folder, device="cpu")
    assert policy.family is QWEN3_VL
    for messages, visuals in ((ROUND1, {FRAMES_REF: CLIP}), _requests()[1]):
        (gen,) = policy.generate(messages, visuals, sampling=SamplingParams(max_new_tokens=6))
        assert gen.completion_ids and len(gen.logprobs) == len(gen.completion_ids)
    shape = model_shape("Qwen/Qwen3-VL-30B-A3B-Instruct", ["q_proj"], 8)
    assert shape.params == pytest.approx(31.07e9, rel=0.01)


def _requests() -> list:  # type: ignore[type-arg]
    key = {KEYFRAME_REF: ImageFrame(FRAMES[5])}
    return [
        (
            round2_messages("the red square", round1=ROUND1, round1_answer="<answer>frame id: 3</answer>"),
            {FRAMES_REF: CLIP, **key},
        ),
        (round2_messages("the blue circle"), {KEYFRAME_REF: ImageFrame(FRAMES[9][:200])}),
        (ROUND1, {FRAMES_REF: CLIP}),
    ]


@pytest.fixture(scope="module", params=["2B", "4B"])
def released_shape_policy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> QwenVLPolicy:
    """A tiny policy shrunk from each released dense configuration."""
    folder = build_tiny_qwen3_vl(tmp_path_factory.mktemp(f"qwen3-{request.param}"), released=request.param)
    return QwenVLPolicy.from_pretrained(folder, device="cpu")


def test_batches_and_positions_equal_transformers_reference(released_shape_policy: QwenVLPolicy) -> None:
    policy = released_shape_policy
    requests = _requests()
    ours = policy.prepare_batch(requests)
    theirs = processor_reference_batch(policy, requests)  # Qwen3-VL's recipe
    assert sorted(ours) == sorted(theirs)
    assert "second_per_grid_ts" not in ours  # Qwen3-VL times frames in text, not in M-RoPE
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value, msg=key)
    # M-RoPE positions of the left-padded batch equal each row's alone (the reference: one
    # unpadded row through the model's own `get_rope_index`)
    inner = policy.model.model
    rope_keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw", "attention_mask")
    batch_positions, _ = inner.get_rope_index(**{k: ours[k] for k in rope_keys if k in ours})
    for b, request in enumerate(requests):
        alone = policy.prepare_batch([request])
        positions, _ = inner.get_rope_index(**{k: alone[k] for k in rope_keys if k in alone})
        keep = ours["attention_mask"][b].bool()
        torch.testing.assert_close(batch_positions[:, b, keep], positions[:, 0])


@pytest.mark.parametrize(("layout", "expected"), [("frame-per-slot", TIMES), ("paired", None)])
def test_each_frame_s_text_timestamp_is_its_real_time(
    tiny_qwen3_policy_dir: Path, layout: str, expected
) -> None:  # type: ignore[no-untyped-def]
    """Round 1's frame ids are mapped through the times the prompt lists; the processor's
    `<t seconds>` before each temporal slot are those times (frame-per-slot: one frame a slot;
    paired: the mean of the slot's two frames, Qwen3-VL's rule)."""
    policy = QwenVLPolicy.from_pretrained(tiny_qwen3_policy_dir, device="cpu", frame_layout=layout)  # type: ignore[arg-type]
    (row,) = policy.inputs.rows([(ROUND1, {FRAMES_REF: CLIP})])
    text = policy.processor.tokenizer.decode(row.input_ids)
    stamps = [float(t) for t in re.findall(r"<([0-9.]+) seconds>", text)]
    if expected is None:
        expected = [(a + b) / 2 for a, b in zip(TIMES[::2], TIMES[1::2], strict=True)]
    assert stamps == [round(t, 1) for t in expected]
    listed = re.findall(r"(\d+): ([0-9.]+)s", text)
    assert [float(t) for _, t in listed] == [round(t, 1) for t in TIMES]  # the prompt's timeline
    ((block),) = row.blocks
    assert block.kind == "video" and int(block.grid[0]) == len(stamps)  # one block spans every slot


@pytest.mark.parametrize("frame_size", [(240, 320), (320, 240), (90, 160), (200, 200), (57, 411)])
def test_a_0_to_1000_answer_lands_on_the_right_frame_pixels(
    policy: QwenVLPolicy, frame_size: tuple[int, int]
) -> None:
    h, w = frame_size
    frame = np.zeros((h, w, 3), np.uint8)
    truth = Box(w * 0.1, h * 0.25, w * 0.6, h * 0.75)
    (row,) = policy.inputs.rows([(round2_messages("the box"), {KEYFRAME_REF: ImageFrame(frame)})])
    target = box_answer(policy, row, frame_size, [truth], "the box")
    assert '"bbox_2d": [100, 250, 600, 750]' in target  # Qwen3-VL's own 0-1000 units
    answer = parse_box_answer(target, units=policy.box_units)
    assert isinstance(answer, BoxAnswer) and answer.strict_format
    model_size = policy.model_sizes(torch.stack([b.grid for b in row.blocks]))[-1]
    assert model_size[0] % 32 == 0 and model_size[1] % 32 == 0
    (box,) = to_frame_space(answer, model_size=model_size, frame_size=frame_size)  # type: ignore[misc]
    np.testing.assert_allclose(box.to_list(), truth.to_list(), atol=max(h, w) / 1000)
    # read as Qwen2.5-VL pixels, the same answer would land elsewhere
    assert QWEN2_5_VL.box_units == "pixels"


def test_sampled_logprobs_equal_a_plain_forward(policy: QwenVLPolicy) -> None:
    """Sampling-time log-probs equal a teacher-forced forward to 1e-5, on round 2's two-turn
    chat with a video and an image (the graph traces' replay: test_replay.py, both families)."""
    messages, visuals = _requests()[0]
    gen = policy.generate(
        messages, visuals, sampling=SamplingParams(do_sample=True, temperature=0.9, max_new_tokens=12, seed=3)
    )[0]
    inputs = policy.prepare_inputs(messages, visuals)
    completion = torch.tensor([gen.completion_ids])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["mm_token_type_ids"] = torch.cat(
        [inputs["mm_token_type_ids"], torch.zeros_like(completion)], dim=1
    )
    with torch.no_grad():
        logits = policy.model(**inputs).logits[0].float() / 0.9
    start = len(gen.prompt_ids) - 1
    plain = torch.log_softmax(logits[start : start + len(gen.completion_ids)], -1)
    plain = plain.gather(-1, completion[0].unsqueeze(-1)).squeeze(-1)
    np.testing.assert_allclose(plain.numpy(), gen.logprobs, atol=1e-5)


def test_a_shared_prefix_changes_nothing(policy: QwenVLPolicy) -> None:
    """Round 2's chats of a group share round 1's video: encoded once and cached, the answers
    and log-probs equal encoding every row whole (Qwen3-VL's M-RoPE offsets included)."""
    requests = [
        (
            round2_messages(d, round1=ROUND1, round1_answer="<answer>frame id: 3</answer>"),
            {FRAMES_REF: CLIP, KEYFRAME_REF: ImageFrame(FRAMES[k])},
        )
        for d, k in (("the red square", 2), ("the blue circle", 9))
    ]
    sampling = SamplingParams(max_new_tokens=10)
    shared = policy.generate_batch(requests, sampling=sampling)
    policy.share_prefix = False
    try:
        whole = policy.generate_batch(requests, sampling=sampling)
    finally:
        policy.share_prefix = True
    for a, b in zip(shared, whole, strict=True):
        assert a.completion_ids == b.completion_ids
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


# -- training -------------------------------------------------------------------------------------
def test_lora_targets_adapt_the_language_model_alone(policy: QwenVLPolicy) -> None:
    from revseg_agent.training.recipe import LoraConfig

    targets = set(LoraConfig().target_modules)
    hit = [
        n
        for n, m in policy.model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in targets
    ]
    assert hit and all(n.startswith("model.language_model.") for n in hit)
    assert len(hit) == 4 * policy.model.config.text_config.num_hidden_layers


def test_two_grpo_steps_train_a_qwen3_policy(tiny_qwen3_policy_dir: Path, tmp_path: Path) -> None:
    """Rollouts through the graph, rewards, replayed log-probs and an optimizer step, twice."""
    import csv

    from revseg_agent.training.data import load_samples
    from revseg_agent.training.trainer import GRPOTrainer

    from .conftest import low_token_share, tiny_grpo_recipe

    recipe = tiny_grpo_recipe(tiny_qwen3_policy_dir, tmp_path / "run", max_steps=2, save_every=2)
    # a random policy's chains all fall back alike: the token-share reward gives groups an advantage
    trainer = GRPOTrainer(
        recipe, load_samples(recipe.data, tmp_path / "data"), extra_rewards={"low": low_token_share}
    )
    assert trainer.policy is not None and trainer.policy.family is QWEN3_VL
    before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
    trainer.train()
    changed = sum(not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters())
    assert changed > 0
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["1.0", "2.0"]
    saved = QwenVLPolicy.from_pretrained(tmp_path / "run" / "checkpoint-2", device="cpu")
    assert saved.family is QWEN3_VL


def test_two_sft_steps_teach_qwen3_s_own_answers(tiny_qwen3_policy_dir: Path, tmp_path: Path) -> None:
    """SFT targets are written in Qwen3-VL's units: the grounding stage's loss falls on them and
    the saved policy loads as a Qwen3-VL policy."""
    from revseg_agent.training.data import load_samples
    from revseg_agent.training.sft_trainer import SFTTrainer

    from .test_sft_trainer import tiny_sft_recipe

    recipe = tiny_sft_recipe(
        tiny_qwen3_policy_dir, tmp_path / "run", max_steps=2, grounding_steps=1, save_every=2
    )
    trainer = SFTTrainer(recipe, load_samples(recipe.data, tmp_path / "data"))
    before = {k: v.detach().clone() for k, v in trainer.policy.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in trainer.policy.model.named_parameters())
    policy = QwenVLPolicy.from_pretrained(tmp_path / "run" / "policy", device="cpu")
    assert policy.family is QWEN3_VL


# -- the command line ------------------------------------------------------------------------------
def test_inspect_policy_names_the_family_its_units_and_timing(tiny_qwen3_policy_dir: Path) -> None:
    from revseg_agent.policies.inspect import inspect_policy

    report = inspect_policy(str(tiny_qwen3_policy_dir), num_frames=8)
    facts = report.facts
    assert facts["family"] == "qwen3-vl" and facts["patch (pixels a merged token covers)"] == "16 (32)"
    assert facts["round-2 box units"].startswith("0-1000")
    assert '"bbox_2d": [250, 250, 750, 750]' in facts["round-2 answer (strict form)"]
    assert facts["frame timing"].startswith("text timestamps")
    assert "tokens_per_second" not in facts
    assert any("image budget" in w and "65536..16777216" in w for w in report.warnings)  # the release's


def test_segment_and_eval_run_a_qwen3_policy_end_to_end(
    tiny_qwen3_policy_dir: Path, demo_clip: Path, tmp_path: Path
) -> None:
    from revseg_agent.app.cli import main

    from .benchmark_fixtures import WRITERS

    common = ["--policy", str(tiny_qwen3_policy_dir), "--tracker", "classical", "--frames", "4"]
    common += ["--max-new-tokens", "8", "--on-parse-failure", "fallback"]
    out = tmp_path / "seg"
    assert main(["segment", str(demo_clip), "the red square", "--out", str(out), *common]) == 0
    trace = json.loads((out / "trace.json").read_text())
    round1 = next(s for s in trace["steps"] if s["node"] == "semantic_interpretation")
    assert round1["completion_ids"]  # the Qwen3-VL policy answered (a random one: it falls back)
    assert len(list((out / "masks").glob("*.png"))) == 24
    root = WRITERS["mevis"](tmp_path / "gt")
    assert (
        main(["eval", "--dataset", "mevis", "--root", str(root), "--out", str(tmp_path / "ev"), *common]) == 0
    )
    summary = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert summary["counts"] and len(summary["expressions"]) == 3 and summary["baseline"] is None
    assert len(list((tmp_path / "ev" / "traces").rglob("*.json"))) == 3


# -- served ----------------------------------------------------------------------------------------
@pytest.mark.cross_process
def test_a_served_qwen3_policy_sends_what_vllm_expects_and_answers_as_the_local_one(
    tiny_qwen3_policy_dir: Path, tmp_path: Path
) -> None:
    """Against the vLLM stand-in (a separate process: vLLM's `video/jpeg` loader checks, then the
    real Qwen3-VL processor on the frames received): frames sized on Qwen3-VL's 32-pixel grid, the
    video's timing as its real fps and original frame indices (so the server's `<t seconds>` are
    the prompt's times), 0-1000 boxes read as such; greedy answers equal the local policy's."""
    from revseg_agent.policies.served import ServedPolicy

    from .vllm_standin import running

    local = QwenVLPolicy.from_pretrained(tiny_qwen3_policy_dir, device="cpu")
    chats = [(ROUND1, {FRAMES_REF: CLIP}), _requests()[0]]
    with running(tiny_qwen3_policy_dir, tmp_path / "server.log") as url:
        served = ServedPolicy.from_spec(f"served:{url}#{tiny_qwen3_policy_dir}")
        assert served.family is QWEN3_VL and served.box_units == "relative"
        sampling = SamplingParams(max_new_tokens=12)
        for messages, visuals in chats:
            (want,) = local.generate(messages, visuals, sampling=sampling)
            (got,) = served.generate(messages, visuals, sampling=sampling)
            assert got.completion_ids == want.completion_ids and got.prompt_ids == want.prompt_ids
            np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-4)  # across processes
            assert (got.image_sizes, got.video_sizes) == (want.image_sizes, want.video_sizes)
            assert all(s % 32 == 0 for size in got.image_sizes + got.video_sizes for s in size)
        import httpx

        # what the server's processor wrote before each frame: the prompt's times
        stamps = httpx.get(f"{url.removesuffix('/v1')}/standin/video_timestamps").json()
        assert stamps and all(s == [round(t, 1) for t in TIMES] for s in stamps)
    # the request's timing, as vLLM's loader reads it
    body = _last_request_timing(served, local)
    assert body["fps"] == 24.0 and body["total_num_frames"] == 160
    assert body["frames_indices"] == [i for i in CLIP.frame_indices for _ in range(2)]  # frame-per-slot
    assert body["num_frames"] == 16


def _last_request_timing(served, local) -> dict:  # type: ignore[no-untyped-def]
    """The `media_io_kwargs.video` a served round-1 request carries (built without a server)."""
    from revseg_agent.policies.served import _openai_messages

    _, _, timings = _openai_messages(ROUND1, {FRAMES_REF: CLIP}, local.inputs, served.family)
    return {**timings[0], "num_frames": len(timings[0]["frames_indices"])}


# -- recipes ---------------------------------------------------------------------------------------
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize(
    ("recipe", "processes", "gpu_gb"),
    [
        ("revseg-qwen3-vl-4b.yaml", 8, 80),
        ("revseg-qwen3-vl-4b-lora.yaml", 1, 80),
        ("revseg-qwen3-vl-2b-lora.yaml", 1, 24),
    ],
)
def test_the_qwen3_recipes_fit_the_hardware_they_name(recipe: str, processes: int, gpu_gb: int) -> None:
    """Planned on the released architectures (meta device, no weights): the 4B on 8 x 80 GB full
    and 1 x 80 GB with LoRA, the 2B with LoRA on one 24 GB card; patches of 16 pixels."""
    from revseg_agent.training.plan import model_shape, plan_memory
    from revseg_agent.training.recipe import load_recipe

    settings = load_recipe(RECIPES / recipe)
    lora = settings.lora
    shape = model_shape(settings.policy, lora.target_modules if lora else None, lora.r if lora else 0)
    assert shape.token_side == 32 and shape.image_budget == (65536, 16777216)
    expected = {"Qwen/Qwen3-VL-4B-Instruct": 4.44e9, "Qwen/Qwen3-VL-2B-Instruct": 2.13e9}[settings.policy]
    assert shape.params == pytest.approx(expected, rel=0.01)  # the released sizes
    plan = plan_memory(settings, num_processes=processes, gpu_memory_gb=gpu_gb, shape=shape)
    assert plan.peak_gib < plan.usable_gib
