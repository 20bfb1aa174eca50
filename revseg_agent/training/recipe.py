"""Training recipes: one YAML file says everything a GRPO or SFT run needs (validated by pydantic)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from revseg_agent.eval.diagnostics import KeyframeTies
from revseg_agent.specs import PolicySpec
from revseg_agent.training.loss import LossType, ScaleRewards
from revseg_agent.training.rewards import RewardConfig
from revseg_agent.video import DEFAULT_NUM_FRAMES

#: `policy: tiny-random` in a recipe builds a tiny random-init Qwen2.5-VL (offline CPU runs);
#: `policy: revseg-tiny-random` the random-init architecture of `revseg-tiny` (to train it anew).
TINY_RANDOM = "tiny-random"
REVSEG_TINY_RANDOM = "revseg-tiny-random"
RANDOM_POLICIES = (TINY_RANDOM, REVSEG_TINY_RANDOM)


def materialise_policy(spec: str, work_dir: Path, seed: int = 0) -> str:
    """What `from_pretrained` loads for a recipe's `policy`: a random-init architecture is built
    once into `work_dir/<spec>-policy`; `revseg-tiny` is the packaged checkpoint; else as given.
    Local folders come back absolute: LoRA checkpoints record this path as their base, and load
    from any working directory."""
    if spec not in RANDOM_POLICIES:
        source = PolicySpec.parse(spec).source()
        return str(Path(source).resolve()) if Path(source).is_dir() else source
    folder = (work_dir / f"{spec}-policy").resolve()
    if not (folder / "config.json").is_file():
        if spec == TINY_RANDOM:
            from revseg_agent.policies.tiny import build_tiny_qwen2_5_vl

            build_tiny_qwen2_5_vl(folder, seed=seed)
        else:
            from revseg_agent.synth.policy import build_revseg_tiny

            build_revseg_tiny(folder, seed=seed)
    return str(folder)


class GeneratedData(BaseModel):
    """Clips the recipe generates offline (a red square among distractors; exact ground truth)."""

    kind: Literal["generated"] = "generated"
    num_samples: int = 8
    num_frames: int = 12
    seed: int = 0


class BenchmarkData(BaseModel):
    """Expressions of a benchmark split with ground truth (MeViS / ReVOS / ReasonVOS layouts)."""

    kind: Literal["benchmark"] = "benchmark"
    dataset: str
    root: str
    split: str | None = None
    limit: int | None = None


class LoraConfig(BaseModel):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class WarmStart(BaseModel):
    """Off-policy steps on stored traces (e.g. from another run) before on-policy training.

    Groups are the stored `group_id`s; rewards are recomputed with this recipe's reward settings
    (`rescore`) or taken as stored. The clipped ratio against the stored sampling-time log-probs
    keeps the updates near the policy that wrote them.
    """

    traces: str
    steps: int = 10
    rescore: bool = True


class RolloutServer(BaseModel):
    """Roll out through a vLLM server that serves the trainer's LoRA adapters
    (`training.served_rollouts`); in a recipe a URL alone is short for `{url: ...}`."""

    model_config = ConfigDict(extra="forbid")

    #: The server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 (vLLM).
    url: str
    #: Adapters are served as `<adapter_prefix>-<step>`.
    adapter_prefix: str = "revseg-step"
    timeout_s: float = Field(600, gt=0)
    #: Requests in flight at once (a group's round-2 calls).
    max_concurrency: int = Field(16, ge=1)


class TrainingSettings(BaseModel):
    """What every training run has, GRPO or SFT: the policy and how it is made trainable (LoRA,
    gradient checkpointing, DeepSpeed), the data, the optimizer and its schedule, checkpoints."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    output_dir: str = "runs/grpo"
    data: GeneratedData | BenchmarkData = Field(default_factory=GeneratedData, discriminator="kind")
    prompts_per_step: int = Field(2, ge=1)
    learning_rate: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    #: The learning rate over the run (TRL's names; transformers' schedules): `linear` decays to 0
    #: at `max_steps` (TRL's default), `cosine` likewise, `constant` keeps it; after a linear
    #: warm-up over `warmup_ratio` of the steps.
    lr_scheduler_type: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    #: Clip the gradients' global norm before each optimizer step (None: no clipping). Under
    #: DeepSpeed it fills the config's "auto" gradient_clipping.
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_new_tokens: int = Field(512, ge=1)
    num_frames: int = Field(DEFAULT_NUM_FRAMES, ge=1)
    max_steps: int = Field(525, ge=1)
    save_every: int = Field(50, ge=1)
    #: Keep only the newest N checkpoints (TRL's name); None keeps all. A 7B checkpoint with its
    #: DeepSpeed shards is ~130 GB: the 7B recipes set it.
    save_total_limit: int | None = Field(None, ge=1)
    seed: int = 0
    #: Walk the prompts in a seeded random order, a new one each epoch (TRL's default); False:
    #: the dataset's order (sorted by video, then expression).
    shuffle_dataset: bool = True
    device: str | None = None
    dtype: str | None = None
    lora: LoraConfig | None = None
    #: Recompute activations in the backward pass instead of storing them: a video prompt of a
    #: few thousand tokens through a 7B model otherwise dominates GPU memory. Same gradients.
    gradient_checkpointing: bool = False
    #: A DeepSpeed JSON config (ZeRO stage 1 or 2: optimizer states and gradients sharded across
    #: processes), e.g. `deepspeed/zero2.json` (relative to the recipe file); "auto" values are
    #: filled from the recipe. Launch with `accelerate launch` or `torchrun` as usual.
    deepspeed: str | None = None
    #: Resize every video frame the policy sees to about this many pixels (upscaled when
    #: smaller); saved into the trained checkpoint's processor, so it loads seeing frames this
    #: way. None keeps the checkpoint's own budget. revseg-tiny's round 1 saw frames of 4 x 4
    #: tokens (112 x 112); `recipes/revseg-tiny-inventory.yaml` gives it 8 x 8 (224 x 224).
    video_pixels: int | None = Field(None, ge=56 * 56)
    #: Deepen the starting policy's language model before training: after each decoder layer,
    #: this many copies whose outputs start at zero (`synth.policy.grow_text_depth`), so the run
    #: starts from exactly the parent's answers with more layers to learn in. A checkpoint
    #: resumed has them already. 0: the policy as it is.
    grow_text_depth: int = Field(0, ge=0)

    @field_validator("policy")
    @classmethod
    def _local_policy(cls, value: str) -> str:
        if PolicySpec.parse(value).served:
            raise ValueError(
                "training replays the policy's own forward passes, so it needs the weights: give a "
                "hub id or a local folder, not a served policy (to sample the rollouts on a server, "
                "add `rollout_server: <url>` with `lora:`)"
            )
        return value

    @classmethod
    def load(cls, path: str | Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe not found: {path}")
        data = read_yaml_mapping(path, what="recipe")
        wanted = cls.model_fields["trainer"].default
        found = data.get("trainer", "grpo")
        if found != wanted:
            said = f"says `trainer: {found}`" if "trainer" in data else "has no `trainer:` line (GRPO)"
            raise ValueError(
                f"this recipe {said}; `revseg train {wanted}` reads recipes with `trainer: {wanted}` "
                f"(e.g. recipes/{'revseg-tiny-sft' if wanted == 'sft' else 'tiny-cpu'}.yaml)"
            )
        return cls.model_validate(data)._resolve_deepspeed(path)

    def _resolve_deepspeed(self, path: Path) -> Self:
        if self.deepspeed is None:
            return self
        config = Path(self.deepspeed)
        recipe = self
        if not config.is_absolute() and (path.parent / config).is_file():
            config = path.parent / config  # paths in a recipe are relative to it
            recipe = self.model_copy(update={"deepspeed": str(config)})
        deepspeed_config(config, 1)  # a missing file or ZeRO-3 fails here, not mid-run
        return recipe


class Recipe(TrainingSettings):
    """A GRPO run (`revseg train grpo`); TRL's `GRPOConfig` names where they exist."""

    trainer: Literal["grpo"] = "grpo"
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    #: Rollouts per prompt; advantages are relative to the group, so one rollout learns nothing.
    group_size: int = Field(8, ge=2)
    gradient_accumulation_steps: int = Field(1, ge=1)
    beta: float = Field(5e-3, ge=0)
    clip_epsilon: float = Field(0.2, gt=0)
    #: The ratio's upper clip (TRL's `epsilon_high`, DAPO's clip-higher); None: `clip_epsilon`.
    epsilon_high: float | None = Field(None, gt=0)
    #: Leave completions cut at `max_new_tokens` out of the loss (TRL's name and default).
    mask_truncated_completions: bool = False
    #: Served rollouts: weight each token by exp(replayed - server log-prob), truncated at the
    #: cap (TRL's names and defaults), correcting for the server's sampler differing from the
    #: trained model's numerics.
    vllm_importance_sampling_correction: bool = True
    vllm_importance_sampling_cap: float = Field(2.0, gt=0)
    #: How token losses are averaged (TRL's names and meanings; see `training.loss`).
    loss_type: LossType = "dapo"
    #: How advantages are scaled (TRL's names): by the group's sample std, the batch's, or not.
    scale_rewards: ScaleRewards = "group"
    temperature: float = Field(1.0, gt=0)
    warm_start: WarmStart | None = None
    tracker: str = "classical"
    #: Experiment trackers besides metrics.csv, through accelerate's trackers: "tensorboard".
    report_to: list[Literal["tensorboard"]] = Field(default_factory=list)
    #: Where rollouts are sampled: absent, by the local policy; else by a vLLM server that
    #: serves this run's LoRA adapters, replayed locally (needs `lora`).
    rollout_server: RolloutServer | None = None

    @field_validator("rollout_server", mode="before")
    @classmethod
    def _url_alone(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _served_rollouts_need_lora(self) -> Recipe:
        if self.rollout_server is not None and self.lora is None:
            raise ValueError(
                "rollout_server needs `lora:`: the server is given each step's weights as a LoRA "
                "adapter it loads at run time; full fine-tuning would need TRL's NCCL weight "
                "transfer (CUDA only, see README 'Scaling out'). Drop rollout_server to sample locally."
            )
        return self


class SFTRecipe(TrainingSettings):
    """A supervised run (`revseg train sft`): the ideal chain's answers from ground truth
    (`training.sft`), with the same model, optimizer and checkpoint settings as GRPO (TRL's
    `SFTConfig` names where they exist). `trainer: sft` in the YAML marks it."""

    trainer: Literal["sft"] = "sft"
    output_dir: str = "runs/sft"
    learning_rate: float = Field(1e-5, gt=0)
    max_new_tokens: int = Field(1024, ge=1)
    max_steps: int = Field(150, ge=1)
    #: The curriculum's first stage: round 2 alone on single frames where the target is visible,
    #: `grounding_batch_size` frames a step, for the first `grounding_steps` steps; then both
    #: rounds of the chain on `prompts_per_step` expressions a step.
    grounding_steps: int = Field(0, ge=0)
    grounding_batch_size: int = Field(16, ge=1)
    #: Rehearsal in the chain stage: every `grounding_every`-th step after the grounding stage is
    #: a grounding step too (0: none). Measured on the synthetic world: chain steps alone at lr
    #: 5e-4 undid what the grounding stage had learned (world-frame box IoU 0.20 -> 0.07 in 700
    #: steps), so round 2 alone keeps being trained between them.
    grounding_every: int = Field(0, ge=0)
    #: The share of grounding items that are lookalike stills instead of world frames: one lit
    #: shape on a floor among 1-3 others that each share its shape or its colour
    #: (`synth.scenes.render_still(lookalikes=True)`), named by colour and shape. Why: the
    #: synthetic world's frames seldom hold two triangles, and a policy trained on them boxes the
    #: wrong one of two about half the time (round 2 alone, valid split, session 24).
    grounding_lookalikes: float = Field(0.0, ge=0, le=1)
    #: Examples in one forward pass (TRL's name): a step's `prompts_per_step` (or
    #: `grounding_batch_size`) examples run in forwards of this many, gradients accumulated. Small
    #: models train several times faster batched; a 7B model's video prompts need 1.
    per_device_train_batch_size: int = Field(1, ge=1)
    #: Round 1's templated reasoning lists the video's objects, their sizes and what each does
    #: (`TrainingSample.inventory`, from the synthetic world's meta) before the evidence that
    #: picks one: a perception step supervised densely, so picking is reading its own list.
    think_inventory: bool = False
    #: The share of chain expressions whose query round 1 is asked with one random pseudo-word
    #: inserted (`training.query_noise`; the targets restate the query without it): a policy
    #: trained from scratch then reads past a word it never saw (the synthetic world's held-out
    #: phrasings) instead of running on.
    query_noise: float = Field(0.0, ge=0, le=1)
    #: Which of the sampled frames where the target is largest round 1 is taught to answer
    #: (`eval.diagnostics.best_sampled_position`): the first, or the one nearest the middle. A
    #: policy that cannot yet tell answers the frame it was taught most often; in the synthetic
    #: world's valid split the target is in view on the middle one (frame 5 of 8) for 89% of
    #: expressions and on the first for 78%.
    keyframe_ties: KeyframeTies = "first"
    #: Train the language model alone: the vision tower and merger stay as loaded and each
    #: distinct frame's or video's visual tokens are computed once and reused
    #: (`training.frozen_vision`), which keeps the tower's grounding while round 1 is taught
    #: and saves its forward and backward (revseg-tiny at 224 x 224 frames, one thread: 1.41x the
    #: grounding steps and 1.46x the chain steps a second; `benchmarks/sft_speed.py`).
    freeze_vision: bool = False


def load_recipe(path: str | Path) -> Recipe | SFTRecipe:
    """A recipe of either trainer, by its `trainer:` key (GRPO when absent)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe not found: {path}")
    kind = read_yaml_mapping(path, what="recipe").get("trainer", "grpo")
    if kind == "sft":
        return SFTRecipe.load(path)
    if kind == "grpo":
        return Recipe.load(path)
    raise ValueError(f"unknown trainer {kind!r}: a recipe's `trainer:` is grpo (the default) or sft")


def read_yaml_mapping(path: Path, *, what: str) -> dict[str, Any]:
    """A YAML file's top-level mapping; `ValueError` naming the line for bad YAML (a tab in the
    indentation, an unclosed bracket), an empty file or anything but a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the {what} is not UTF-8 text") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"not valid YAML{where}: {problem}") from exc
    if data is None:
        raise ValueError(f"the {what} is empty: give at least `policy:` and `data:` (see recipes/)")
    if not isinstance(data, dict):
        raise ValueError(f"the {what} must be a YAML mapping of settings, not a {type(data).__name__}")
    return data


def deepspeed_config(
    path: str | Path, world_size: int, dtype: str | None = None, max_grad_norm: float | None = None
) -> dict[str, Any]:
    """A DeepSpeed config for the trainer: "auto" batch sizes filled in (one rollout per
    backward, accumulation handled by the trainer), "auto" gradient clipping from the recipe's
    `max_grad_norm`, ZeRO stage 3 refused (rollouts generate with full weights on every rank),
    torch's AdamW allowed under ZeRO."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config not found: {path}")
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    stage = int(config.get("zero_optimization", {}).get("stage", 0))
    if stage > 2:
        raise ValueError(
            f"{path}: ZeRO stage {stage} shards the weights, but rollouts generate with the whole "
            "policy on every rank; use stage 1 or 2 (optimizer states and gradients sharded)"
        )
    for key, value in (
        ("train_micro_batch_size_per_gpu", 1),
        ("gradient_accumulation_steps", 1),
        ("train_batch_size", world_size),
    ):
        if config.get(key, "auto") == "auto":
            config[key] = value
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = max_grad_norm or 0.0
    for key, wanted in (("bf16", "bfloat16"), ("fp16", "float16")):
        if config.get(key, {}).get("enabled") == "auto":
            config[key]["enabled"] = dtype == wanted
    config.setdefault("zero_allow_untested_optimizer", True)
    return config
