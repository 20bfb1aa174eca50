"""Qwen2.5-VL and Qwen3-VL as a `Policy`, on transformers.

Visual inputs are prepared the way Qwen's own code prepares them (qwen-vl-utils: pixel budgets,
resizing to multiples of 28 or 32), and the round-1 frames reach the processor with their real
temporal metadata, so the video's time axis is the real one (Qwen2.5-VL: M-RoPE's temporal
positions; Qwen3-VL: the `<t seconds>` text before each frame) instead of an assumed 24 fps.
What differs between the families is in `families`; nothing here branches on it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, SuppressTokensLogitsProcessor

from revseg_agent.errors import CheckpointError
from revseg_agent.parsing import BoxUnits
from revseg_agent.policies.base import (
    GREEDY,
    ChatMessage,
    Generation,
    SamplingParams,
    Visual,
    token_budget,
)
from revseg_agent.policies.families import ModelFamily, family_of_config
from revseg_agent.policies.frame_layout import (
    DEFAULT_FRAME_LAYOUT,
    DEFAULT_FRAME_TIMING,
    FrameLayout,
    FrameTiming,
    check_layout,
    check_timing,
    checkpoint_frame_timing,
)
from revseg_agent.policies.mrope import use_reference_rope_index
from revseg_agent.policies.qwen_batches import prefix_inputs, shared_prefix_length
from revseg_agent.policies.qwen_inputs import QwenInputBuilder, Request
from revseg_agent.policies.released import DEFAULT_POLICY
from revseg_agent.policies.sampled_logprobs import SampledTokenLogprobs
from revseg_agent.policies.token_rows import TokenRow

logger = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (as Qwen2.5-VL is released), fp32 on the CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def check_policy_source(name: str, *, revision: str | None = None) -> None:
    """Cheap checks before anything is loaded: a local folder exists; a hub id is cached or the
    hub is reachable (one DNS lookup instead of a minute of retries)."""
    if looks_local(name) and not Path(name).expanduser().is_dir():
        raise CheckpointError(f"policy checkpoint folder does not exist: {name}")
    if not Path(name).expanduser().is_dir():
        from revseg_agent.hub import require_hub_or_cache

        require_hub_or_cache(name, "config.json", what="policy", revision=revision)


def looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


class QwenVLPolicy:
    """A Qwen2.5-VL or Qwen3-VL checkpoint (hub id or local folder) answering the graph's prompts."""

    #: Assistant turns that carry sampled `token_ids` are fed as those ids (token-in/token-out).
    feeds_token_ids = True

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str,
        image_max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        video_total_pixels: int | None = None,
        frame_layout: FrameLayout = DEFAULT_FRAME_LAYOUT,
        frame_timing: FrameTiming = DEFAULT_FRAME_TIMING,
    ) -> None:
        self.model = model
        #: The new-token budget the checkpoint was trained with (`generation_config.json`
        #: `max_new_tokens`, which `revseg train` writes); runs default to it (`token_budget`).
        trained = getattr(getattr(model, "generation_config", None), "max_new_tokens", None)
        self.trained_max_new_tokens: int | None = int(trained) if trained else None
        #: What differs between Qwen-VL families (patch size, video timing, box units), from the
        #: checkpoint's `model_type`.
        self.family: ModelFamily = family_of_config(model.config)
        #: How this family writes boxes (Qwen2.5-VL: resized-input pixels; Qwen3-VL: 0-1000 units).
        self.box_units: BoxUnits = self.family.box_units
        use_reference_rope_index(model)  # M-RoPE as the released model was trained (see mrope)
        self.processor = processor
        self._name = name
        self.image_max_pixels = image_max_pixels
        self.video_max_pixels = video_max_pixels
        self.video_total_pixels = video_total_pixels
        #: How round 1's frames fill Qwen2.5-VL's temporal slots (see `frame_layout`).
        self.frame_layout = check_layout(frame_layout)
        #: How the fed rate is derived (`frame_layout.FrameTiming`): what the checkpoint was trained
        #: with (`revseg.json`), the floor for the released model.
        self.frame_timing = check_timing(frame_timing)
        #: Encode a prefix that every row of a call shares once and reuse its KV cache (n samples
        #: of one chat; a group's round-2 chats). Off: every row is encoded whole (for comparison).
        self.share_prefix = True
        # Calls are serialised: concurrent callers (a served graph, `revseg eval --workers`) share
        # one policy, the model keeps per-call state (M-RoPE offsets, the prefix path resets
        # it), and parallel calls into one model would gain nothing.
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_POLICY,
        *,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        image_max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        video_total_pixels: int | None = None,
        frame_layout: FrameLayout = DEFAULT_FRAME_LAYOUT,
        frame_timing: FrameTiming | None = None,
        revision: str | None = None,
        name: str | None = None,
    ) -> QwenVLPolicy:
        """Load a Qwen2.5-VL or Qwen3-VL checkpoint and its processor.

        `name_or_path` is anything `from_pretrained` takes: a hub id such as
        `Qwen/Qwen2.5-VL-7B-Instruct` or `Qwen/Qwen3-VL-4B-Instruct`, or a local folder (e.g. a
        fine-tuned checkpoint).
        `attn_implementation` is passed through (`"sdpa"`, `"flash_attention_2"`, `"eager"`).
        Pixel budgets default to the processor's own limits; `frame_timing` to what the checkpoint
        was trained with (`revseg.json` beside its weights), else the floor. `name` is what traces
        record (default: `name_or_path`; the registry passes the spec, e.g. `revseg-tiny`).
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        label = name
        name = str(name_or_path)
        check_policy_source(name, revision=revision)
        device = device or default_device()
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or default_dtype(device)
        kwargs: dict[str, Any] = {"dtype": dtype, "revision": revision}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
            processor = AutoProcessor.from_pretrained(name, revision=revision)
        except (OSError, ValueError, RuntimeError) as exc:  # missing files, bad config, shape mismatch
            raise CheckpointError(f"cannot load policy {name!r}: {exc}") from exc
        family_of_config(model.config)  # a CheckpointError naming the model type otherwise
        model = model.to(device).eval()  # type: ignore[arg-type]  # transformers types `.to` oddly
        logger.info("loaded policy %s on %s (%s)", name, device, dtype)
        return cls(
            model,
            processor,
            name=label or name,
            image_max_pixels=image_max_pixels,
            video_max_pixels=video_max_pixels,
            video_total_pixels=video_total_pixels,
            frame_layout=frame_layout,
            frame_timing=frame_timing or checkpoint_frame_timing(name),
        )

    # -- input preparation ---------------------------------------------------------------------
    @property
    def inputs(self) -> QwenInputBuilder:
        """Builds token rows and batches (see `qwen_inputs`); pixel budgets are read per call."""
        return QwenInputBuilder(
            self.processor,
            image_max_pixels=self.image_max_pixels,
            video_max_pixels=self.video_max_pixels,
            video_total_pixels=self.video_total_pixels,
            frame_layout=self.frame_layout,
            frame_timing=self.frame_timing,
            family=self.family,
        )

    def prepare_inputs(
        self, messages: Sequence[ChatMessage], visuals: Mapping[str, Visual]
    ) -> dict[str, Any]:
        """Tokenise a chat with its visuals into model inputs (also used by training replay).

        Assistant messages that carry `token_ids` are spliced in as those ids (token-in/out)."""
        return self.prepare_batch([(messages, visuals)])

    def prepare_batch(self, requests: Sequence[Request]) -> dict[str, Any]:
        """Tokenise several chats into one left-padded batch (images and videos in order)."""
        builder = self.inputs
        return builder.collate(builder.rows(requests))

    def model_sizes(self, grid: torch.Tensor | None) -> list[tuple[int, int]]:
        """`(height, width)` each image or video was resized to, from the processor's patch grid."""
        return [] if grid is None else self.family.model_sizes(grid.tolist())

    # -- generation ----------------------------------------------------------------------------
    def generate(
        self,
        messages: Sequence[ChatMessage],
        visuals: Mapping[str, Visual],
        *,
        sampling: SamplingParams = GREEDY,
        n: int = 1,
    ) -> list[Generation]:
        """`n` completions of one chat, sampled in one batched call."""
        with self._lock:
            return self._generate([(messages, visuals)], sampling, n)

    def generate_batch(
        self, requests: Sequence[Request], *, sampling: SamplingParams = GREEDY
    ) -> list[Generation]:
        """One completion for each of several chats, in one left-padded batched call."""
        with self._lock:
            return self._generate(requests, sampling, 1)

    @torch.inference_mode()
    def _generate(self, requests: Sequence[Request], sampling: SamplingParams, n: int) -> list[Generation]:
        builder = self.inputs
        rows = builder.rows(requests)
        shared = shared_prefix_length(rows) if self.share_prefix and len(rows) * n > 1 else 0
        device = self.device
        gen_kwargs = self._generation_kwargs(sampling)
        temperature = sampling.temperature if sampling.do_sample else 1.0
        recorder = SampledTokenLogprobs(0, temperature)
        # the recorder must see raw logits: it goes first, token suppression after it (processors
        # the generation config adds come before custom ones, so suppression is not left there)
        gen_kwargs["logits_processor"] = LogitsProcessorList(
            [recorder, SuppressTokensLogitsProcessor(self._vision_token_ids(), device=str(device))]
        )
        if shared > 0:
            # Encode the shared prefix (e.g. the round-1 video and query) once; every row then
            # runs only its own tokens on a copy of that KV cache.
            prefix = _to(prefix_inputs(rows[0], shared), device)
            cache = self.model(**prefix, use_cache=True, logits_to_keep=1).past_key_values
            expanded = [row for row in rows for _ in range(n)]
            cache.batch_repeat_interleave(len(expanded))
            model_inputs = _to(builder.collate(expanded, shared=shared, pixels_from=shared), device)
            self._forget_rope_deltas()  # positions are recomputed over the whole rows
            out = self.model.generate(**model_inputs, cache=cache, **gen_kwargs)
            per_row = 1
        else:
            expanded = list(rows)
            model_inputs = _to(builder.collate(rows), device)
            out = self.model.generate(**model_inputs, num_return_sequences=n, **gen_kwargs)
            per_row = n
        prompt_len = int(model_inputs["input_ids"].shape[1])
        sequences = out.sequences[:, prompt_len:]
        recorder.prompt_length = prompt_len
        logprobs = recorder.finish(out.sequences)
        eos_ids = self._eos_ids()
        results = []
        for i in range(sequences.shape[0]):
            row = expanded[i // per_row]
            ids = sequences[i].tolist()
            end = next((k + 1 for k, t in enumerate(ids) if t in eos_ids), len(ids))
            completion = ids[:end]
            results.append(
                Generation(
                    text=self.decode(completion),
                    prompt_ids=list(row.input_ids),
                    completion_ids=completion,
                    logprobs=[float(x) for x in logprobs[i, :end].tolist()],
                    image_sizes=self._block_sizes(row, "image"),
                    video_sizes=self._block_sizes(row, "video"),
                )
            )
        return results

    def _generation_kwargs(self, sampling: SamplingParams) -> dict[str, Any]:
        """Exactly `sampling`: every field that shapes the sampled distribution is set here, so
        the checkpoint's `generation_config.json` (Qwen's instruct releases: repetition penalty
        1.05, top-k 1, top-p 0.001, temperature 0.1) cannot change what is sampled, and the
        stored log-probs (of `softmax(logits / temperature)`) are those of the sampled tokens."""
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        kwargs: dict[str, Any] = {
            **neutral_generation_fields(),
            "max_new_tokens": token_budget(sampling, self.trained_max_new_tokens),
            "do_sample": sampling.do_sample,
            "return_dict_in_generate": True,
            "pad_token_id": self.processor.tokenizer.pad_token_id,
            # A completion must never contain vision placeholders (replaying it would misalign
            # the visual features; only a random-init model would ever sample them): `_generate`
            # suppresses them with a processor placed after the log-prob recorder.
            "suppress_tokens": None,
        }
        if sampling.do_sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def decode(self, completion_ids: Sequence[int]) -> str:
        """Completion text for the parser. Only end-of-turn tokens are dropped: special tokens
        such as <|box_start|> (Qwen2-VL-style grounding) carry the answer."""
        eos_ids = self._eos_ids()
        return str(self.processor.tokenizer.decode([t for t in completion_ids if t not in eos_ids]))

    def _block_sizes(self, row: TokenRow, kind: str) -> list[tuple[int, int]]:
        grids = [b.grid for b in row.blocks if b.kind == kind]
        return self.model_sizes(torch.stack(grids)) if grids else []

    def _forget_rope_deltas(self) -> None:
        """Qwen2.5-VL keeps the last call's M-RoPE offsets on the model; a cached-prefix call
        must recompute them for its own rows."""
        for module in self.model.modules():
            if hasattr(module, "rope_deltas"):
                module.rope_deltas = None

    def _vision_token_ids(self) -> list[int]:
        tokens = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
        ids = [self.processor.tokenizer.convert_tokens_to_ids(t) for t in tokens]
        unk = self.processor.tokenizer.unk_token_id
        return [int(i) for i in ids if i is not None and i != unk]

    @property
    def eos_token_ids(self) -> set[int]:
        """The ids that end a completion (the checkpoint's eos ids and `<|im_end|>`)."""
        return self._eos_ids()

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        ids.add(int(self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")))
        return {int(i) for i in ids if i is not None}


#: `GenerationConfig` fields that change which tokens are sampled or their probabilities. Each is
#: set explicitly on every call (to the library's neutral default, or None where that is off).
DISTRIBUTION_FIELDS = (
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "penalty_alpha",
    "dola_layers",
    "top_h",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "sequence_bias",
    "renormalize_logits",
    "guidance_scale",
    "min_length",
    "min_new_tokens",
    "exponential_decay_length_penalty",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "begin_suppress_tokens",
    "watermarking_config",
)


def neutral_generation_fields() -> dict[str, Any]:
    """`DISTRIBUTION_FIELDS` at transformers' global defaults (None where there is none)."""
    return dict(_neutral_generation_items())


@functools.lru_cache(maxsize=1)
def _neutral_generation_items() -> tuple[tuple[str, Any], ...]:
    from transformers import GenerationConfig

    known = GenerationConfig().to_dict()
    defaults = GenerationConfig()._get_default_generation_params()
    return tuple((name, defaults.get(name)) for name in DISTRIBUTION_FIELDS if name in known)


def _to(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
