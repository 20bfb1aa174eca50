"""Build a tiny, randomly initialised Qwen2.5-VL checkpoint from the real architecture.

Why this exists: the model hub is not reachable on CI and developer machines, yet the loading
path users take (`from_pretrained` on a hub id or a local folder) must be exercised end to end.
This writes a real `Qwen2_5_VLForConditionalGeneration` checkpoint (safetensors), a real
`Qwen2_5_VLProcessor` (image + video processor, tokenizer, Qwen2.5-VL chat template) to a folder,
which `QwenVLPolicy.from_pretrained(folder)` then loads exactly like `Qwen/Qwen2.5-VL-7B-Instruct`.

The weights are random: the model's answers are noise. It is for tests, demos and benchmarks of
the machinery, never for results.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

#: Qwen's special tokens, in the order Qwen2.5-VL's tokenizer defines them (ids are ours).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

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


def build_tiny_tokenizer(vocab_size: int = 512):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer with Qwen's special tokens, trained offline on a tiny corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TOKENIZER_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
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
) -> Path:
    """Write a tiny random-init Qwen2.5-VL (model + processor) to `out_dir` and return it.

    The architecture constants that matter for correctness (patch 14, spatial merge 2, temporal
    patch 2, M-RoPE, window attention with a full-attention block) are those of the released
    Qwen2.5-VL configs; only widths, depths and the vocabulary are shrunk.
    """
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    num_heads = 4
    head_dim = text_hidden // num_heads
    # M-RoPE sections (temporal, height, width) must sum to head_dim / 2.
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 2,
            "num_hidden_layers": text_layers,
            "num_attention_heads": num_heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10.0, "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 2,
            "num_heads": 2,
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
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out, safe_serialization=True)

    image_processor = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": image_max_pixels})
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
    logger.info("wrote a tiny random-init Qwen2.5-VL to %s", out)
    return out
