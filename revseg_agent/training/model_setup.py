"""Making a loaded policy trainable, the same way for GRPO and SFT: LoRA adapters (new, or a
checkpoint's to resume) and activation checkpointing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from revseg_agent.policies.qwen import QwenVLPolicy

if TYPE_CHECKING:
    from revseg_agent.training.recipe import TrainingSettings


def load_trainable_policy(
    settings: TrainingSettings, base: str, checkpoint: Path | None, device: str
) -> QwenVLPolicy:
    """The policy to train: `base` (or a full `checkpoint` when resuming without LoRA), wrapped
    with the settings' LoRA adapters (a LoRA `checkpoint` holds the adapters; its base is
    `base`), with gradient checkpointing when asked."""
    full_checkpoint = checkpoint is not None and settings.lora is None
    policy = QwenVLPolicy.from_pretrained(
        str(checkpoint) if full_checkpoint else base,
        device=device,
        dtype=settings.dtype,
        name=settings.policy,  # traces record the recipe's spec (`specs`), not the folder it loads
    )
    if settings.video_pixels is not None:
        policy.inputs.set_video_pixels(settings.video_pixels)
    if settings.grow_text_depth and not full_checkpoint:
        from revseg_agent.synth.policy import grow_text_depth

        grow_text_depth(policy.model, copies=settings.grow_text_depth)
    if settings.lora is not None:
        policy.model = with_lora(policy.model, settings, checkpoint)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(policy.model)
    return policy


def with_lora(model: Any, settings: TrainingSettings, checkpoint: Path | None = None) -> Any:
    """`model` wrapped in PEFT LoRA adapters: the checkpoint's when resuming, else new ones,
    initialised from the settings' seed (the same adapters in every run of a recipe)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    lora = settings.lora
    assert lora is not None
    if checkpoint is not None:
        return PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
    )
    torch.manual_seed(settings.seed)
    return get_peft_model(model, config)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute each decoder layer in the backward pass. Non-reentrant checkpointing also works
    when only LoRA adapters need gradients (the inputs of a frozen base need none)."""
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x name
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
