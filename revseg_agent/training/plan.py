"""Per-GPU memory plan of a training recipe, and the check that refuses a run that cannot fit.

Why: a 7B full fine-tune on one process needs about 137 GiB before activations, so the shipped
recipe on one 80 GB GPU would only fail after the model loads (or, worse, after the first
rollouts). The plan is arithmetic on the model's parameter count (from its config, instantiated on
PyTorch's meta device: no weights read), the recipe and the process count:

- weights: every parameter in the recipe's dtype, on every process (ZeRO 1-2 do not shard them);
- gradients: trainable parameters in their dtype, divided by the processes under ZeRO-2;
- master weights: fp32 copies of half-precision trainable parameters (the trainer's
  `MasterWeightAdamW`, DeepSpeed's bf16 mode), divided by the processes under ZeRO 1-2;
- optimizer: AdamW's two fp32 moments, divided by the processes under ZeRO 1-2;
- reference: a frozen copy for the KL term (none for LoRA: the base with adapters off is it);
- LoRA: adapter weights, kept in fp32 by peft;
- activations of one replayed rollout (batch 1): per decoder layer `7h + 2kv + 3i` values per
  token (norm outputs, q/k/v, attention output, residuals, SwiGLU's gate/up/product; SDPA keeps
  no attention matrix), all layers' inputs plus one layer's when checkpointing; the same for the
  vision tower's patches; plus fp32 logits and log-probs at the completion positions;
- generation KV cache: G rows x sequence x layers x 2 x kv width (rollouts run before the replay,
  so the peak is the larger of this and the activations);
- SFT recipes (`trainer: sft`): no reference and no generation; round 1's forward (prompt, video,
  answer) and round 2's are backwarded together, so both forwards' activations count, times the
  examples in one forward (`per_device_train_batch_size`);
- runtime: CUDA context and allocator slack, a flat 2 GiB.

The sequence is the round-2 replay: prompt text, round 1's video (one token slot per sampled
frame, at most qwen-vl-utils' 768 tokens per frame), round 1's completion, the keyframe (its
tokens are the checkpoint's image budget applied to the data's frame size: a 1080p keyframe is
2,691 tokens under the released processor) and round 2's completion. Weights are in the dtype the
loader would use: the recipe's, else bf16 on a GPU (`policies.qwen.default_dtype`), fp32 on a
CPU. A plan fits when its peak stays under the GPU's memory less `headroom` (10% by default:
fragmentation and the estimate's error).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revseg_agent.errors import InputError, RevsegError
from revseg_agent.training.recipe import (
    RANDOM_POLICIES,
    Recipe,
    SFTRecipe,
    TrainingSettings,
    materialise_policy,
)

GIB = 1024**3
PROMPT_TEXT_TOKENS = 300
#: qwen-vl-utils' cap on one video frame (VIDEO_MAX_PIXELS = 768 * 28 * 28).
MAX_FRAME_TOKENS = 768
#: A keyframe of about 1280 x 640 pixels at 28 x 28 pixels per token.
KEYFRAME_TOKENS = 1024
#: The frame size assumed when the data's frames cannot be read here: 1080p.
DEFAULT_FRAME_SIZE = (1080, 1920)
#: Share of GPU memory a plan leaves free (allocator fragmentation, the estimate's error).
DEFAULT_HEADROOM = 0.10
RUNTIME_GIB = 2.0
HALF_DTYPES = {"bfloat16", "bf16", "float16", "fp16", "half"}


@dataclass
class ModelShape:
    """What the plan needs of a checkpoint's architecture."""

    params: int
    lora_params: int
    hidden: int
    intermediate: int
    layers: int
    kv_width: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    frame_tokens: int
    keyframe_tokens: int
    #: The image processor's pixel budget (min, max): the keyframe's tokens follow from it.
    image_budget: tuple[int, int] = (3136, 12845056)
    #: Side in pixels of one merged visual token (Qwen2.5-VL 28, Qwen3-VL 32).
    token_side: int = 28


def image_tokens(frame_size: tuple[int, int], budget: tuple[int, int], token_side: int = 28) -> int:
    """Tokens of one image of `frame_size` after the processor's resize (qwen-vl-utils'
    `smart_resize` on the family's token grid: 28 or 32 pixels) and the 2 x 2 merge."""
    from qwen_vl_utils import smart_resize

    h, w = smart_resize(
        frame_size[0], frame_size[1], factor=token_side, min_pixels=budget[0], max_pixels=budget[1]
    )
    return (h // token_side) * (w // token_side)


@dataclass
class MemoryPlan:
    rows: dict[str, float]
    num_processes: int
    gpu_memory_gb: float
    global_queries: int
    group_size: int
    sequence_tokens: int
    zero_stage: int
    notes: list[str] = field(default_factory=list)
    headroom: float = DEFAULT_HEADROOM
    trainer: str = "grpo"

    @property
    def peak_gib(self) -> float:
        static = sum(v for k, v in self.rows.items() if k not in {"activations", "generation KV cache"})
        return static + max(self.rows["activations"], self.rows["generation KV cache"])

    @property
    def available_gib(self) -> float:
        return self.gpu_memory_gb * 1e9 / GIB

    @property
    def usable_gib(self) -> float:
        return self.available_gib * (1 - self.headroom)

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.usable_gib

    def table(self) -> str:
        lines = [f"per-GPU memory plan ({self.num_processes} process(es), ZeRO stage {self.zero_stage}):"]
        for name, value in self.rows.items():
            lines.append(f"  {name:<22} {value:8.1f} GiB")
        lines.append(f"  {'peak':<22} {self.peak_gib:8.1f} GiB  (static + max(activations, KV cache))")
        lines.append(f"  {'GPU memory':<22} {self.available_gib:8.1f} GiB  ({self.gpu_memory_gb:g} GB)")
        lines.append(f"  {'usable':<22} {self.usable_gib:8.1f} GiB  ({self.headroom:.0%} headroom)")
        if self.trainer == "sft":
            lines.append(
                f"global batch: {self.global_queries} expressions per step; "
                f"round-2 sequence ~{self.sequence_tokens} tokens"
            )
        else:
            lines.append(
                f"global batch: {self.global_queries} queries x G={self.group_size} = "
                f"{self.global_queries * self.group_size} rollouts per step; "
                f"replay sequence ~{self.sequence_tokens} tokens"
            )
        lines += [f"note: {n}" for n in self.notes]
        lines.append("fits" if self.fits else "DOES NOT FIT")
        return "\n".join(lines)

    def fixes(self) -> str:
        return (
            "ways to fit: more processes with ZeRO-2 (`accelerate launch` with "
            "recipes/accelerate/multi-gpu.yaml and `deepspeed: deepspeed/zero2.json`), "
            "LoRA (`lora: {r: 16}`), gradient_checkpointing: true, fewer num_frames or "
            "max_new_tokens; see recipes/ for plans that fit"
        )


def _config_of(policy: str) -> Any:
    from transformers import AutoConfig, Qwen2_5_VLConfig

    from revseg_agent.policies.released import RELEASED_ARCHITECTURES, RELEASED_QWEN3_VL_ARCHITECTURES

    try:
        return AutoConfig.from_pretrained(policy, local_files_only=True)
    except (OSError, ValueError) as exc:
        if policy in RELEASED_ARCHITECTURES:
            return Qwen2_5_VLConfig(**RELEASED_ARCHITECTURES[policy])
        if policy in RELEASED_QWEN3_VL_ARCHITECTURES:
            released = RELEASED_QWEN3_VL_ARCHITECTURES[policy]
            moe = "num_experts" in released["text_config"]
            return AutoConfig.for_model("qwen3_vl_moe" if moe else "qwen3_vl", **released)
        raise InputError(f"cannot read the config of {policy!r} offline to plan memory: {exc}") from exc


def _pixel_budget(policy: str, name: str, key: str = "max_pixels") -> int | None:
    """`max_pixels` (or `key`) of the checkpoint's image or video processor, when it is a local
    folder (transformers 5 nests them in `processor_config.json`; older layouts have their own)."""
    folder = Path(policy)
    candidates: list[dict[str, Any]] = []
    nested = folder / "processor_config.json"
    if nested.is_file():
        candidates.append(json.loads(nested.read_text(encoding="utf-8")).get(f"{name}_processor") or {})
    for file in (f"{name}_preprocessor_config.json", "preprocessor_config.json"):
        if (folder / file).is_file():
            candidates.append(json.loads((folder / file).read_text(encoding="utf-8")))
    edge = "longest_edge" if key == "max_pixels" else "shortest_edge"
    for data in candidates:
        value = data.get(key) or (data.get("size") or {}).get(edge)
        if value:
            return int(value)
    return None


def model_shape(policy: str, lora_targets: list[str] | None, lora_r: int) -> ModelShape:
    """Parameter counts from the config on the meta device (no weights are read or allocated)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from revseg_agent.policies.families import family_of_config
    from revseg_agent.policies.released import RELEASED_IMAGE_PIXELS

    if policy in RANDOM_POLICIES:
        with tempfile.TemporaryDirectory() as tmp:
            return model_shape(materialise_policy(policy, Path(tmp)), lora_targets, lora_r)
    config = _config_of(policy)
    family = family_of_config(config)
    token_pixels = family.pixels_per_token_side**2
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    lora = 0
    if lora_targets:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in lora_targets:
                lora += lora_r * (module.in_features + module.out_features)
    text, vision = config.text_config, config.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    video = _pixel_budget(policy, "video")
    image = _pixel_budget(policy, "image")
    return ModelShape(
        params=params,
        lora_params=lora,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        kv_width=text.num_key_value_heads * head_dim,
        vocab=text.vocab_size,
        vision_hidden=vision.hidden_size,
        vision_intermediate=vision.intermediate_size,
        vision_depth=vision.depth,
        frame_tokens=min(MAX_FRAME_TOKENS, video // token_pixels) if video else MAX_FRAME_TOKENS,
        keyframe_tokens=min(KEYFRAME_TOKENS, image // token_pixels) if image else KEYFRAME_TOKENS,
        image_budget=(
            _pixel_budget(policy, "image", "min_pixels") or RELEASED_IMAGE_PIXELS[family.name][0],
            image or RELEASED_IMAGE_PIXELS[family.name][1],
        ),
        token_side=family.pixels_per_token_side,
    )


def forward_activation_bytes(
    shape: ModelShape,
    sequence: int,
    visual_tokens: int,
    scored_tokens: int,
    act_bytes: int,
    checkpointing: bool,
) -> float:
    """Bytes kept for the backward pass of one training forward (batch 1) over `sequence` tokens,
    `visual_tokens` of them from the vision tower, with log-probs at `scored_tokens` positions.

    Per decoder layer and token: `7h + 2kv + 3i` (norm outputs, q/k/v, attention output,
    residuals, SwiGLU's gate/up/product) plus `2(h - kv)` for the keys and values attention
    saves after grouped-query expansion; the patch embedding keeps its input pixels (3 x 2 x 14 x
    14 per patch); logits, log-probs and the logits' gradient are fp32 at the scored positions.
    Checked against torch's memory profiler on the tiny models (`benchmarks/activation_memory.py`)."""
    per_token_layer = 7 * shape.hidden + 2 * shape.kv_width + 3 * shape.intermediate
    per_token_layer += 2 * (shape.hidden - shape.kv_width)
    if checkpointing:
        text = sequence * (shape.layers * shape.hidden + per_token_layer) * act_bytes
    else:
        text = sequence * shape.layers * per_token_layer * act_bytes
    patches = 4 * visual_tokens  # before the 2 x 2 merge
    vision_layer = 7 * shape.vision_hidden + 3 * shape.vision_intermediate
    if checkpointing:
        vision = patches * (shape.vision_depth * shape.vision_hidden + vision_layer) * act_bytes
    else:
        vision = patches * shape.vision_depth * vision_layer * act_bytes
    vision += patches * 3 * 2 * (shape.token_side // 2) ** 2 * act_bytes
    logits = scored_tokens * shape.vocab * 4 * 3  # fp32 logits, log-probs and the logits' gradient
    return float(text + vision + logits)


def zero_stage(recipe: TrainingSettings) -> int:
    if recipe.deepspeed is None:
        return 0
    config = json.loads(Path(recipe.deepspeed).read_text(encoding="utf-8"))
    return int(config.get("zero_optimization", {}).get("stage", 0))


def data_frame_size(recipe: TrainingSettings) -> tuple[int, int] | None:
    """`(height, width)` of the recipe's frames when they can be read here (the first frame of
    a benchmark's first expression, the generated clips' size); None otherwise."""
    from revseg_agent.training.recipe import GeneratedData

    if isinstance(recipe.data, GeneratedData):
        from revseg_agent.training.data import CLIP_SIZE

        return CLIP_SIZE
    try:
        from revseg_agent.eval.datasets import open_benchmark
        from revseg_agent.video import open_video

        bench = open_benchmark(recipe.data.dataset, recipe.data.root, recipe.data.split)
        info = open_video(bench.frames_dir(bench.samples()[0])).info
    except (OSError, IndexError, RevsegError):
        return None
    return info.height, info.width


def weights_are_half(recipe: TrainingSettings) -> bool:
    """The loader's rule: the recipe's dtype, else bf16 on a GPU and fp32 on the CPU."""
    if recipe.dtype:
        return recipe.dtype.lower() in HALF_DTYPES
    return recipe.device != "cpu"  # a plan is for GPUs unless the recipe says cpu


def plan_memory(
    recipe: TrainingSettings,
    *,
    num_processes: int = 1,
    gpu_memory_gb: float = 80.0,
    shape: ModelShape | None = None,
    headroom: float = DEFAULT_HEADROOM,
    frame_size: tuple[int, int] | None = None,
) -> MemoryPlan:
    """The per-GPU plan of `recipe` on `num_processes` GPUs of `gpu_memory_gb` GB each, keeping
    `headroom` of the memory free; keyframes of `frame_size` (default: the data's, else 1080p)."""
    if num_processes < 1:
        raise InputError("--num-processes must be at least 1")
    if not 0 <= headroom < 1:
        raise InputError(f"--headroom must be a fraction in [0, 1), got {headroom}")
    lora = recipe.lora
    shape = shape or model_shape(recipe.policy, lora.target_modules if lora else None, lora.r if lora else 0)
    notes = []
    if frame_size is None:
        frame_size = data_frame_size(recipe)
        if frame_size is None:
            frame_size = DEFAULT_FRAME_SIZE
            notes.append("the data's frames are not readable here: keyframes planned at 1080p")
    keyframe_tokens = image_tokens(frame_size, shape.image_budget, shape.token_side)
    half = weights_are_half(recipe)
    weight_bytes = 2 if half else 4
    stage = zero_stage(recipe)
    n = num_processes
    grad_shards = n if stage >= 2 else 1
    optim_shards = n if stage >= 1 else 1
    rows: dict[str, float] = {"weights": shape.params * weight_bytes / GIB}
    if lora is None:
        trainable, trainable_bytes = shape.params, weight_bytes
        rows["gradients"] = trainable * trainable_bytes / grad_shards / GIB
        rows["master weights"] = trainable * 4 / optim_shards / GIB if half else 0.0
        rows["optimizer (AdamW)"] = trainable * 8 / optim_shards / GIB
        needs_reference = isinstance(recipe, Recipe) and recipe.beta > 0  # GRPO's KL term
        rows["reference"] = shape.params * weight_bytes / GIB if needs_reference else 0.0
        rows["LoRA adapters"] = 0.0
    else:
        trainable = shape.lora_params  # peft keeps adapters in fp32: no master copy
        rows["gradients"] = trainable * 4 / grad_shards / GIB
        rows["master weights"] = 0.0
        rows["optimizer (AdamW)"] = trainable * 8 / optim_shards / GIB
        rows["reference"] = 0.0
        rows["LoRA adapters"] = trainable * 4 / GIB
    completion = recipe.max_new_tokens
    video_tokens = recipe.num_frames * shape.frame_tokens
    sequence = PROMPT_TEXT_TOKENS + video_tokens + keyframe_tokens + 2 * completion
    act_bytes = 2 if half else 4
    activations = forward_activation_bytes(
        shape,
        sequence,
        video_tokens + keyframe_tokens,
        2 * completion,
        act_bytes,
        recipe.gradient_checkpointing,
    )
    sft = isinstance(recipe, SFTRecipe)
    if isinstance(recipe, SFTRecipe):
        # SFT backwards round 1 (its video and answer) and round 2 together: both graphs are alive
        round1 = PROMPT_TEXT_TOKENS + video_tokens + completion
        activations += forward_activation_bytes(
            shape, round1, video_tokens, completion, act_bytes, recipe.gradient_checkpointing
        )
        activations *= recipe.per_device_train_batch_size  # examples in one forward
    rows["activations"] = activations / GIB
    group_size = recipe.group_size if isinstance(recipe, Recipe) else 1
    rows["generation KV cache"] = (  # SFT generates nothing
        0.0 if sft else group_size * sequence * shape.layers * 2 * shape.kv_width * weight_bytes / GIB
    )
    rows["runtime"] = RUNTIME_GIB
    accumulation = recipe.gradient_accumulation_steps if isinstance(recipe, Recipe) else 1
    if stage == 0 and n > 1:
        notes.append("without DeepSpeed every process holds the whole optimizer state")
    if stage >= 1 and n == 1:
        notes.append(f"ZeRO stage {stage} on one process shards nothing")
    return MemoryPlan(
        rows=rows,
        num_processes=n,
        gpu_memory_gb=gpu_memory_gb,
        global_queries=recipe.prompts_per_step * accumulation * n,
        group_size=group_size,
        sequence_tokens=sequence,
        zero_stage=stage,
        notes=notes,
        headroom=headroom,
        trainer="sft" if sft else "grpo",
    )


def check_fits(
    recipe: TrainingSettings, *, num_processes: int, gpu_memory_gb: float, headroom: float = DEFAULT_HEADROOM
) -> MemoryPlan:
    """The plan, or an `InputError` with its numbers and the fixes when it cannot fit."""
    plan = plan_memory(recipe, num_processes=num_processes, gpu_memory_gb=gpu_memory_gb, headroom=headroom)
    if not plan.fits:
        raise InputError(
            f"this recipe cannot fit: {plan.peak_gib:.1f} GiB per GPU needed, "
            f"{plan.usable_gib:.1f} GiB usable of {plan.available_gib:.1f} GiB "
            f"({plan.headroom:.0%} headroom)\n{plan.table()}\n{plan.fixes()}"
        )
    return plan


def check_device_memory(recipe: TrainingSettings, *, device: str, num_processes: int) -> MemoryPlan | None:
    """On a CUDA device, the recipe's plan checked against the device's memory (`InputError`
    with the numbers and the fixes when it cannot fit); None elsewhere. Both trainers call it
    before loading the model."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return check_fits(recipe, num_processes=num_processes, gpu_memory_gb=total / 1e9)
