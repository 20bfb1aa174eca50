"""The planner's activation model (`training.plan.forward_activation_bytes`) against a measured
peak: torch's memory profiler over one real SFT step on a tiny policy (round 1 on a clip and
round 2 on its keyframe, backwarded together, as `revseg train sft` does), with and without
gradient checkpointing.

Measured: the peak over the step of the memory the profiler files as activations, temporaries
and autograd's own buffers (everything but parameters, inputs, gradients and optimizer state),
minus what the forward starts with. Planned: the model's formula at the step's real token counts.
Prints both and the error (planned / measured - 1) per model and setting.

Usage: python benchmarks/activation_memory.py [--policy tiny-random --policy revseg-tiny-random]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

#: The profiler's categories (torch.profiler._memory_profiler order, after a leading slot):
#: parameter, optimizer state, input, temporary, activation, gradient, autograd detail, unknown.
WORKING_CATEGORIES = (4, 5, 7, 8)


def measured_and_planned(policy_dir: str, work: Path, *, checkpointing: bool) -> dict[str, Any]:
    """One SFT step's working-memory peak (profiler) and the plan's activations for it, in bytes."""
    from torch.profiler import ProfilerActivity, profile

    from revseg_agent.policies.qwen import QwenVLPolicy
    from revseg_agent.training import sft
    from revseg_agent.training.data import generated_samples
    from revseg_agent.training.model_setup import enable_gradient_checkpointing
    from revseg_agent.training.plan import forward_activation_bytes, model_shape
    from revseg_agent.training.recipe import GeneratedData

    torch.manual_seed(0)
    policy = QwenVLPolicy.from_pretrained(policy_dir, device="cpu", dtype="float32")
    if checkpointing:
        enable_gradient_checkpointing(policy.model)
    sample = generated_samples(work / "clips", GeneratedData(num_samples=1, num_frames=8, seed=3))[0]
    forwards: list[dict[str, int]] = []  # each forward's real token counts, recorded as it runs

    def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        visual = sum(
            int(kwargs[key].prod(-1).sum()) // 4
            for key in ("video_grid_thw", "image_grid_thw")
            if key in kwargs
        )
        scored = int(kwargs["logits_to_keep"]) - 1  # the answer's tokens (one row)
        forwards.append({"tokens": int(kwargs["input_ids"].shape[1]), "visual": visual, "scored": scored})

    hook = policy.model.register_forward_pre_hook(record, with_kwargs=True)
    policy.model.train()
    try:
        with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            loss1, loss2 = sft.sft_losses(policy, sample, 4)
            (loss1 + loss2).backward()
    finally:
        hook.remove()
    timeline = work / f"timeline-{Path(policy_dir).name}-{checkpointing}.json"
    prof.export_memory_timeline(str(timeline), device="cpu")
    _, sizes = json.loads(timeline.read_text())
    working = [sum(row[i] for i in WORKING_CATEGORIES) for row in sizes]
    measured = max(working) - working[0]
    shape = model_shape(policy_dir, None, 0)
    planned = sum(
        forward_activation_bytes(shape, f["tokens"], f["visual"], f["scored"], 4, checkpointing)
        for f in forwards
    )
    return {"measured": measured, "planned": planned, "forwards": forwards}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", action="append", help="random-init architectures or local folders")
    args = parser.parse_args()
    from revseg_agent.training.recipe import materialise_policy

    specs = args.policy or ["tiny-random", "revseg-tiny-random"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"{'policy':<20} {'checkpointing':<14} {'measured MiB':>12} {'planned MiB':>12} {'error':>8}")
        for spec in specs:
            folder = materialise_policy(spec, work)
            for checkpointing in (False, True):
                row = measured_and_planned(folder, work, checkpointing=checkpointing)
                error = row["planned"] / row["measured"] - 1
                print(
                    f"{spec:<20} {checkpointing!s:<14} {row['measured'] / 2**20:12.2f} "
                    f"{row['planned'] / 2**20:12.2f} {error:+8.1%}  forwards {row['forwards']}"
                )


if __name__ == "__main__":
    main()
