"""Training rollouts from a vLLM server that serves the trainer's current LoRA adapters.

Why: at 7B, sampling with vLLM is an order of magnitude faster than `generate` (TRL, verl and
Veason-R1 all roll out with it). The server samples; the trainer replays every trace through its
local policy (the "old" log-probs are the local replay's, as for local rollouts), so what a
server computes differently from transformers moves the samples, not the loss.

Between optimizer steps the server must sample from the new weights. With LoRA that is vLLM's
runtime adapter loading (`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve ... --enable-lora`):
after every step the adapters are saved to `adapters/step-N` (a new folder each time: vLLM does
not invalidate prefix-cache blocks of an adapter reloaded from the same path) and loaded under a
new name, `<prefix>-N`; the previous one is then unloaded and its folder removed (the
checkpoints keep adapters). Full fine-tuning needs the weights themselves on the server (TRL's
`vllm-serve` NCCL weight transfer, CUDA only): see README "Scaling out".
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from revseg_agent.errors import InputError
from revseg_agent.graphs.names import POLICY_NODES
from revseg_agent.graphs.traces import Trace
from revseg_agent.policies.qwen_inputs import QwenInputBuilder
from revseg_agent.policies.served import ServedPolicy, ServedPolicyError
from revseg_agent.training.recipe import RolloutServer

logger = logging.getLogger(__name__)


class AdapterPublisher:
    """Keeps a vLLM server serving the trainer's current LoRA adapters (see the module doc)."""

    def __init__(self, config: RolloutServer, out: Path, sizing: QwenInputBuilder) -> None:
        self.config = config
        self.folder = out / "adapters"
        self.sizing = sizing
        #: The adapter name the server samples with now, and its folder.
        self.loaded: tuple[str, Path] | None = None
        self.admin = ServedPolicy(config.url, model="-", timeout_s=config.timeout_s)

    def name(self, step: int) -> str:
        return f"{self.config.adapter_prefix}-{step}"

    def policy(self, step: int) -> ServedPolicy:
        """The served policy that samples with step `step`'s adapters (once published)."""
        return ServedPolicy(
            self.config.url,
            self.name(step),
            timeout_s=self.config.timeout_s,
            sizing=self.sizing,
            max_concurrency=self.config.max_concurrency,
        )

    def publish(self, model: Any, step: int) -> None:
        """Save `model`'s adapters for `step`, load them on the server, unload the previous."""
        name = self.name(step)
        if self.loaded is not None and self.loaded[0] == name:
            return
        target = self.folder / f"step-{step}"
        partial = self.folder / f".step-{step}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(str(partial))  # PEFT: adapter_config.json + adapter_model.safetensors
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        body = {"lora_name": name, "lora_path": str(target.resolve()), "load_inplace": True}
        try:
            self.admin.request("POST", "/load_lora_adapter", body)
        except ServedPolicyError as exc:
            raise ServedPolicyError(
                f"{exc}\nThe rollout server must load LoRA adapters at run time: start vLLM with "
                "`--enable-lora --max-lora-rank <r>` and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, on "
                f"a machine that can read {target.resolve()}"
            ) from exc
        logger.info("rollout server %s serves %s", self.config.url, name)
        previous, self.loaded = self.loaded, (name, target)
        if previous is not None:
            self.admin.request("POST", "/unload_lora_adapter", {"lora_name": previous[0]})
            shutil.rmtree(previous[1], ignore_errors=True)
        else:
            self._drop_leftovers(keep=target)

    def _drop_leftovers(self, keep: Path) -> None:
        """A resumed run: the adapters an interrupted run left loaded and on disk go (a name the
        server no longer knows is fine)."""
        for folder in sorted(self.folder.glob("step-*")):
            if folder == keep or not folder.name.removeprefix("step-").isdigit():
                continue
            stale = self.name(int(folder.name.removeprefix("step-")))
            try:
                self.admin.request("POST", "/unload_lora_adapter", {"lora_name": stale})
            except ServedPolicyError:
                logger.info("adapter %s was not loaded on the rollout server", stale)
            shutil.rmtree(folder, ignore_errors=True)


def require_token_ids(traces: Sequence[Trace], server: str) -> None:
    """Served rollouts are trainable only with the prompt and completion ids the server
    sampled (vLLM's `return_token_ids`); say so instead of failing in replay."""
    for trace in traces:
        for step in trace.steps:
            has_ids = bool(step.prompt_ids and step.completion_ids)
            if step.node in POLICY_NODES and step.completion and not has_ids:
                raise InputError(
                    f"the rollout server {server} returned no token ids for a {step.node} call; "
                    "training replays them: use vLLM >= 0.10.2 (`return_token_ids`)"
                )
