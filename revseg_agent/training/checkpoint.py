"""Training checkpoints: `checkpoint-<step>` folders in Hugging Face layout (weights as
safetensors, the processor) plus the optimizer state and `trainer_state.json`, written atomically
(a partial folder renamed when complete), so a killed run resumes from the last whole one.

accelerate's `save_state` is not used: the trainer does not hand its model to
`Accelerator.prepare` (rollouts call `generate` on the bare model), and a checkpoint must stay
loadable by `from_pretrained` as a policy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from revseg_agent.policies.frame_layout import DEFAULT_FRAME_TIMING, FrameTiming, write_checkpoint_settings

#: The tag DeepSpeed's own checkpoint files are written under inside a checkpoint folder.
DEEPSPEED_TAG = "deepspeed"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete `checkpoint-<step>` in `out` (one with its trainer state)."""
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return next((c for c in reversed(ckpts) if (c / TRAINER_STATE).is_file()), None)


def checkpoint_to_resume(out: Path, resume: bool) -> Path | None:
    """The checkpoint a run in `out` continues from: the latest with `resume`; none for a new
    run, which is refused where an earlier run left checkpoints (a later --resume would mix them)."""
    found = latest_checkpoint(out)
    if found is not None and not resume:
        from revseg_agent.errors import InputError

        raise InputError(
            f"{out} holds checkpoints of an earlier run: pass --resume to continue it, "
            "or choose another output folder"
        )
    return found


def checkpoint_step(ckpt: Path) -> int:
    return int(json.loads((ckpt / TRAINER_STATE).read_text(encoding="utf-8"))["step"])


def load_optimizer_state(ckpt: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(ckpt / OPTIMIZER_STATE, map_location="cpu", weights_only=True)
    return state


def partial_folder(out: Path, step: int) -> Path:
    return out / f".checkpoint-{step}.partial"


def record_token_budget(model: Any, max_new_tokens: int | None) -> None:
    """Write the budget the policy was trained with into its generation config, so inference
    defaults to it (`policies.base.token_budget`; vLLM reads the same field)."""
    config = getattr(model, "generation_config", None)
    if config is not None and max_new_tokens:
        config.max_new_tokens = int(max_new_tokens)


def write_policy_files(
    folder: Path,
    *,
    model: Any,
    processor: Any,
    step: int,
    recipe: dict[str, Any],
    optimizer_state: dict[str, Any] | None,
    frame_timing: FrameTiming = DEFAULT_FRAME_TIMING,
) -> None:
    """The main process's files of a checkpoint (DeepSpeed writes its shards beside them)."""
    folder.mkdir(parents=True, exist_ok=True)
    record_token_budget(model, recipe.get("max_new_tokens"))
    model.save_pretrained(folder, safe_serialization=True)
    write_checkpoint_settings(folder, frame_timing=frame_timing)
    processor.save_pretrained(folder)
    if optimizer_state is not None:
        torch.save(optimizer_state, folder / OPTIMIZER_STATE)
    (folder / TRAINER_STATE).write_text(json.dumps({"step": step, "recipe": recipe}), encoding="utf-8")


def publish(partial: Path, out: Path, step: int) -> Path:
    """Move a complete partial folder into place as `checkpoint-<step>`."""
    final = out / f"checkpoint-{step}"
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)
    return final


def rotate_checkpoints(out: Path, *, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (TRL's `save_total_limit`); returns
    what went. The newest is always kept, so a resumed run finds it."""
    ckpts = sorted(
        (c for c in out.glob("checkpoint-*") if (c / TRAINER_STATE).is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    gone = ckpts[: max(len(ckpts) - max(keep, 1), 0)]
    for ckpt in gone:
        shutil.rmtree(ckpt)
    return gone
