"""Build a tiny, randomly initialised Qwen2.5-VL or Qwen3-VL checkpoint from the real architecture.

Why this exists: the model hub is not reachable on CI and developer machines, yet the loading
path users take (`from_pretrained` on a hub id or a local folder) must be exercised end to end.
This writes a real `Qwen2_5_VLForConditionalGeneration` checkpoint (safetensors), a real
`Qwen2_5_VLProcessor` (image + video processor, tokenizer, Qwen2.5-VL chat template) to a folder,
which `QwenVLPolicy.from_pretrained(folder)` then loads exactly like `Qwen/Qwen2.5-VL-7B-Instruct`.

The weights are random: the model's answers are noise. It is for tests, demos and benchmarks of
the machinery, never for results.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from revseg_agent.policies.released import (
    FIRST_ADDED_ID,
    QWEN3_ADDED_TOKENS,
    QWEN_ADDED_TOKENS,
    QWEN_SPECIAL_TOKENS,
    RELEASED_GENERATION_CONFIG,
    RELEASED_MAX_PIXELS,
    RELEASED_MIN_PIXELS,
    RELEASED_PREPROCESSOR_CONFIG,
    RELEASED_QWEN3_VL_CONFIGS,
    RELEASED_QWEN3_VL_GENERATION_CONFIG,
    RELEASED_QWEN3_VL_IMAGE_PIXELS,
    RELEASED_QWEN3_VL_VIDEO_PIXELS,
    RELEASED_VOCAB_SIZE,
)

logger = logging.getLogger(__name__)

_TOKENIZER_CORPUS = (
    "frame id: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
    "object description: the red square, the blue circle, the dog, the black swan, the car",
    "<think>The query asks for the object that moves. It is visible in frame 3.</think>",
    "<answer>frame id: 3\nobject description: the red square</answer>",
    "Detect the red square with bbox coordinates. bbox: [12, 34, 56, 78]",
    "You are a helpful assistant. The video has 16 frames sampled uniformly, numbered from 1.",
    "system user assistant Answer with the frame id and an object description.",
)


def chat_template() -> str:
    """The Qwen2.5-VL chat template (Apache-2.0, as shipped in TRL's `chat_templates/`)."""
    return (
        resources.files("revseg_agent")
        .joinpath("assets/qwen2_5_vl_chat_template.jinja")
        .read_text(encoding="utf-8")
    )


#: Qwen2's pre-tokenizer split (its `tokenizer.json`): digits one at a time, words with one
#: leading non-letter, punctuation runs, newlines, spaces.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _pre_tokenizer(qwen_split: bool):  # type: ignore[no-untyped-def]
    from tokenizers import Regex, pre_tokenizers

    if not qwen_split:
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def build_tiny_tokenizer(  # type: ignore[no-untyped-def]
    vocab_size: int = 512,
    *,
    released_ids: bool = True,
    corpus: Sequence[str] | None = None,
    qwen_split: bool = False,
    added_tokens: Sequence[tuple[str, int, bool]] = QWEN_ADDED_TOKENS,
):
    """A byte-level BPE tokenizer with all of Qwen2.5-VL's added tokens (or `added_tokens`:
    Qwen3-VL's), with the same special/non-special split, so decoding behaves as the release's
    does.

    A small BPE is trained offline on a tiny corpus (or `corpus`: a policy that must learn a
    language gets a vocabulary fitted to it). With `released_ids` its vocabulary is padded
    with unreachable filler entries up to id 151643, where Qwen's added tokens start, so every id
    is the released one; without, the added tokens follow the BPE vocabulary (a ~530-row
    embedding: what the fast tests and the tiny training runs use).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = _pre_tokenizer(qwen_split)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    trained.train_from_iterator(corpus or _TOKENIZER_CORPUS, trainer=trainer)
    bpe = json.loads(trained.to_str())["model"]
    vocab: dict[str, int] = dict(bpe["vocab"])
    merges: list[tuple[str, str]] = [
        (m.split(" ")[0], m.split(" ")[1]) if isinstance(m, str) else (m[0], m[1]) for m in bpe["merges"]
    ]
    for i in range(len(vocab), FIRST_ADDED_ID if released_ids else 0):
        vocab[f"<|unused_{i}|>"] = i  # never produced: no merge leads to it
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = _pre_tokenizer(qwen_split)
    tok.decoder = decoders.ByteLevel()
    for token, token_id, special in added_tokens:
        added = AddedToken(token, special=special, normalized=False)
        tok.add_special_tokens([added]) if special else tok.add_tokens([added])
        if released_ids and tok.token_to_id(token) != token_id:  # pragma: no cover - a guard
            raise RuntimeError(f"{token} got id {tok.token_to_id(token)}, not the released {token_id}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t != "<|endoftext|>"],
    )
    fast.chat_template = chat_template()
    return fast


def build_tiny_qwen2_5_vl(
    out_dir: str | Path,
    *,
    seed: int = 0,
    text_hidden: int = 64,
    text_layers: int = 2,
    vision_hidden: int = 32,
    vision_depth: int = 2,
    image_max_pixels: int = 112 * 112,
    video_max_pixels: int = 56 * 56,
    image_min_pixels: int = 56 * 56,
    released_budgets: bool = False,
    released_vocab: bool = False,
    tokenizer_corpus: Sequence[str] | None = None,
    vocab_size: int = 512,
    text_heads: int = 4,
    rope_theta: float = 10.0,
    vision_heads: int = 2,
    qwen_split: bool = False,
) -> Path:
    """Write a tiny random-init Qwen2.5-VL (model + processor) to `out_dir` and return it.

    What is the released Qwen2.5-VL-7B-Instruct's: the architecture constants that matter for
    correctness (patch 14, spatial merge 2, temporal patch 2, tokens_per_second 2, M-RoPE, window
    attention with a full-attention block), the tokenizer's added tokens, and
    `generation_config.json` (repetition penalty, top-k 1, ...). What is shrunk: widths and
    depths, the vocabulary (unless `released_vocab`: then every added token has its released id
    and the embedding the released 152,064 rows, tied to keep the file at ~40 MB) and the
    processor's pixel budgets (unless `released_budgets`: then the release's min/max pixels and,
    like the release, no video processor config).
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(
        vocab_size, released_ids=released_vocab, corpus=tokenizer_corpus, qwen_split=qwen_split
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t, _, _ in QWEN_ADDED_TOKENS}
    num_heads = text_heads
    head_dim = text_hidden // num_heads
    # M-RoPE sections (temporal, height, width) must sum to head_dim / 2.
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": RELEASED_VOCAB_SIZE if released_vocab else len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta, "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 2,
            "num_heads": vision_heads,
            "out_hidden_size": text_hidden,
            "fullatt_block_indexes": [vision_depth - 1],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=released_vocab,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        **{
            **RELEASED_GENERATION_CONFIG,
            "bos_token_id": ids["<|endoftext|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        }
    )
    model.save_pretrained(out, safe_serialization=True)

    if released_budgets:
        size = {"shortest_edge": RELEASED_MIN_PIXELS, "longest_edge": RELEASED_MAX_PIXELS}
        image_processor = Qwen2VLImageProcessor(size=size)
        video_processor = Qwen2VLVideoProcessor(size=size)
    else:
        image_processor = Qwen2VLImageProcessor(
            size={"shortest_edge": image_min_pixels, "longest_edge": image_max_pixels}
        )
        video_processor = Qwen2VLVideoProcessor(
            size={"shortest_edge": 56 * 56, "longest_edge": video_max_pixels * 2},
            cap_pixels_per_frame=True,
        )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=chat_template(),
    )
    processor.save_pretrained(out)
    if released_budgets:  # the release's layout: one preprocessor_config.json, no video config
        (out / "processor_config.json").unlink()
        (out / "preprocessor_config.json").write_text(json.dumps(RELEASED_PREPROCESSOR_CONFIG, indent=2))
    logger.info("wrote a tiny random-init Qwen2.5-VL to %s", out)
    return out


def build_tiny_qwen3_vl(
    out_dir: str | Path,
    *,
    released: str = "2B",
    seed: int = 0,
    text_hidden: int = 64,
    text_layers: int = 2,
    text_heads: int = 4,
    vision_hidden: int = 32,
    vision_depth: int = 3,
    vision_heads: int = 2,
    image_min_pixels: int = 64 * 64,
    image_max_pixels: int = 128 * 128,
    video_max_pixels: int = 64 * 64,
    released_budgets: bool = False,
    tokenizer_corpus: Sequence[str] | None = None,
    vocab_size: int = 512,
    qwen_split: bool = False,
) -> Path:
    """Write a tiny random-init Qwen3-VL (model + processor) to `out_dir` and return it.

    Built from the released `Qwen/Qwen3-VL-{released}-Instruct` configuration
    (`released.RELEASED_QWEN3_VL_CONFIGS`): what is kept are the constants the chain depends on
    (patch 16, spatial merge 2, temporal patch 2, interleaved M-RoPE with the release's section
    proportions, DeepStack features taken from layers at the release's relative depths, tied
    embeddings, 2304 learned position embeddings interpolated per image, the activation, the
    Qwen3 tokenizer's added tokens, `generation_config.json`); widths, depths and the vocabulary
    are shrunk; pixel budgets too unless `released_budgets`. `released="30B-A3B"` builds the
    mixture-of-experts model (`qwen3_vl_moe`) with 4 experts, 2 a token. The chat template is the one the
    package ships for Qwen2.5-VL: both families render the chain's turns (system, user with an
    image or a video, assistant) to the same text, and Qwen3-VL's processor then writes each
    video frame's `<t seconds>` itself.
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    if released not in RELEASED_QWEN3_VL_CONFIGS:
        raise ValueError(
            f"unknown Qwen3-VL release {released!r}; choose one of {sorted(RELEASED_QWEN3_VL_CONFIGS)}"
        )
    source = RELEASED_QWEN3_VL_CONFIGS[released]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(
        vocab_size,
        released_ids=False,
        corpus=tokenizer_corpus,
        qwen_split=qwen_split,
        added_tokens=QWEN3_ADDED_TOKENS,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t, _, _ in QWEN3_ADDED_TOKENS}
    text_source = source["text_config"]
    vision_source = source["vision_config"]
    head_dim = text_hidden // text_heads
    # the release's M-RoPE sections (temporal, height, width) scaled to head_dim / 2
    sections = text_source["rope_parameters"]["mrope_section"]
    half = head_dim // 2
    height = max(1, round(sections[1] * half / sum(sections)))
    mrope = [half - 2 * height, height, height]
    # DeepStack taps the vision tower at the release's relative depths (5, 11, 17 of 24)
    taps = sorted(
        {
            min(vision_depth - 1, int(i * vision_depth / vision_source["depth"]))
            for i in vision_source["deepstack_visual_indexes"]
        }
    )
    moe = "num_experts" in text_source
    experts = (
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": text_hidden,
            "decoder_sparse_step": 1,
        }
        if moe
        else {}
    )
    config_class, model_class = (
        (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration)
        if moe
        else (Qwen3VLConfig, Qwen3VLForConditionalGeneration)
    )
    config = config_class(
        text_config={
            **experts,
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 3,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_heads,
            "num_key_value_heads": max(1, text_heads // 2),
            "head_dim": head_dim,
            "max_position_embeddings": 4096,
            "rms_norm_eps": text_source["rms_norm_eps"],
            "rope_parameters": {**text_source["rope_parameters"], "mrope_section": mrope},
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 4,
            "num_heads": vision_heads,
            "hidden_act": vision_source["hidden_act"],
            "patch_size": vision_source["patch_size"],
            "spatial_merge_size": vision_source["spatial_merge_size"],
            "temporal_patch_size": vision_source["temporal_patch_size"],
            "num_position_embeddings": vision_source["num_position_embeddings"],
            "deepstack_visual_indexes": taps,
            "out_hidden_size": text_hidden,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=source["tie_word_embeddings"],
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()  # type: ignore[arg-type]  # the class matches its config
    model.generation_config = GenerationConfig(
        **{
            **RELEASED_QWEN3_VL_GENERATION_CONFIG,
            "bos_token_id": ids["<|endoftext|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        }
    )
    model.save_pretrained(out, safe_serialization=True)
    image_pixels = (
        RELEASED_QWEN3_VL_IMAGE_PIXELS if released_budgets else (image_min_pixels, image_max_pixels)
    )
    video_pixels = RELEASED_QWEN3_VL_VIDEO_PIXELS if released_budgets else (32 * 32, video_max_pixels * 2)
    common: dict[str, Any] = {
        "patch_size": 16,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            size={"shortest_edge": image_pixels[0], "longest_edge": image_pixels[1]}, **common
        ),
        video_processor=Qwen3VLVideoProcessor(
            size={"shortest_edge": video_pixels[0], "longest_edge": video_pixels[1]},
            cap_pixels_per_frame=True,  # qwen-vl-utils' per-frame cap (transformers' coming default)
            **common,
        ),
        tokenizer=tokenizer,
        chat_template=chat_template(),
    )
    processor.save_pretrained(out)
    logger.info("wrote a tiny random-init Qwen3-VL (from the %s release) to %s", released, out)
    return out
