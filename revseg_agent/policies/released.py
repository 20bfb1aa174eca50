"""What the released Qwen2.5-VL-7B-Instruct checkpoint ships that changes behaviour: its tokenizer's
added tokens and ids, its vocabulary size, its `generation_config.json` and its processor budgets.

One home for these facts: tiny test checkpoints are built to match them (`policies.tiny`),
`revseg inspect-policy` warns where a checkpoint differs from them, and the served policy counts
the release's placeholder ids in a server's prompt.
"""

from __future__ import annotations

from typing import Any

#: The released checkpoint ReVSeg runs (the default policy everywhere a policy is named).
DEFAULT_POLICY = "Qwen/Qwen2.5-VL-7B-Instruct"

#: Qwen2.5-VL's added tokens with their released ids (`tokenizer.json` of the Qwen2.5 family):
#: `(token, id, special)`. Special tokens are dropped by `decode(skip_special_tokens=True)`.
QWEN_ADDED_TOKENS: tuple[tuple[str, int, bool], ...] = (
    ("<|endoftext|>", 151643, True),
    ("<|im_start|>", 151644, True),
    ("<|im_end|>", 151645, True),
    ("<|object_ref_start|>", 151646, True),
    ("<|object_ref_end|>", 151647, True),
    ("<|box_start|>", 151648, True),
    ("<|box_end|>", 151649, True),
    ("<|quad_start|>", 151650, True),
    ("<|quad_end|>", 151651, True),
    ("<|vision_start|>", 151652, True),
    ("<|vision_end|>", 151653, True),
    ("<|vision_pad|>", 151654, True),
    ("<|image_pad|>", 151655, True),
    ("<|video_pad|>", 151656, True),
    ("<tool_call>", 151657, False),
    ("</tool_call>", 151658, False),
    ("<|fim_prefix|>", 151659, False),
    ("<|fim_middle|>", 151660, False),
    ("<|fim_suffix|>", 151661, False),
    ("<|fim_pad|>", 151662, False),
    ("<|repo_name|>", 151663, False),
    ("<|file_sep|>", 151664, False),
)
QWEN_SPECIAL_TOKENS = tuple(t for t, _, special in QWEN_ADDED_TOKENS if special)
#: The first added token's id: the released BPE vocabulary fills ids below it.
FIRST_ADDED_ID = QWEN_ADDED_TOKENS[0][1]
#: Qwen2.5-VL-7B-Instruct's `config.json` vocab_size (the embedding is padded past the tokenizer).
RELEASED_VOCAB_SIZE = 152064
#: The released instruct checkpoints' `generation_config.json` (what a run must override).
RELEASED_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_p": 0.001,
    "top_k": 1,
}
#: Qwen2.5-VL-7B-Instruct's `preprocessor_config.json` pixel budgets (it ships no video config).
RELEASED_MIN_PIXELS = 3136
RELEASED_MAX_PIXELS = 12845056
RELEASED_PREPROCESSOR_CONFIG = {
    "min_pixels": RELEASED_MIN_PIXELS,
    "max_pixels": RELEASED_MAX_PIXELS,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}
#: Released id of each added token, by token.
RELEASED_TOKEN_IDS = {token: token_id for token, token_id, _ in QWEN_ADDED_TOKENS}

#: Qwen2.5-VL-7B-Instruct's `config.json` architecture (what `revseg train plan` sizes a run with
#: when the checkpoint's config cannot be read offline): 8,292,166,656 parameters.
RELEASED_7B_ARCHITECTURE: dict[str, Any] = {
    "text_config": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "vocab_size": RELEASED_VOCAB_SIZE,
        "tie_word_embeddings": False,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 128000,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "hidden_act": "silu",
    },
    "tie_word_embeddings": False,
    "vocab_size": RELEASED_VOCAB_SIZE,
    "hidden_size": 3584,
}
RELEASED_ARCHITECTURES = {DEFAULT_POLICY: RELEASED_7B_ARCHITECTURE}


# -- Qwen3-VL ------------------------------------------------------------------------------------
#: Qwen3-VL's tokenizer adds these after Qwen2.5's (same ids below 151665).
QWEN3_EXTRA_ADDED_TOKENS: tuple[tuple[str, int, bool], ...] = (
    ("<tool_response>", 151665, False),
    ("</tool_response>", 151666, False),
    ("<think>", 151667, False),
    ("</think>", 151668, False),
)
QWEN3_ADDED_TOKENS = QWEN_ADDED_TOKENS + QWEN3_EXTRA_ADDED_TOKENS
#: `config.json` of the released dense Qwen3-VL instruct checkpoints (Qwen/Qwen3-VL-2B-Instruct,
#: Qwen/Qwen3-VL-4B-Instruct), the fields that shape the architecture.
_QWEN3_VL_VISION = {
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
}
_QWEN3_VL_TEXT = {
    "vocab_size": 151936,
    "head_dim": 128,
    "num_key_value_heads": 8,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 5000000,
        "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
}
RELEASED_QWEN3_VL_CONFIGS: dict[str, dict[str, Any]] = {
    "2B": {
        "text_config": {
            **_QWEN3_VL_TEXT,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
        },
        "vision_config": {**_QWEN3_VL_VISION, "out_hidden_size": 2048},
        "tie_word_embeddings": True,
    },
    "4B": {
        "text_config": {
            **_QWEN3_VL_TEXT,
            "hidden_size": 2560,
            "intermediate_size": 9728,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
        },
        "vision_config": {**_QWEN3_VL_VISION, "out_hidden_size": 2560},
        "tie_word_embeddings": True,
    },
}
#: Qwen/Qwen3-VL-30B-A3B-Instruct (`qwen3_vl_moe`): 128 experts, 8 a token, a larger vision tower.
RELEASED_QWEN3_VL_CONFIGS["30B-A3B"] = {
    "text_config": {
        **_QWEN3_VL_TEXT,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 768,
        "decoder_sparse_step": 1,
    },
    "vision_config": {
        **_QWEN3_VL_VISION,
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "out_hidden_size": 2048,
        "deepstack_visual_indexes": [8, 16, 24],
    },
    "tie_word_embeddings": False,
}
#: Qwen3-VL instruct `generation_config.json` (sampling defaults a run overrides).
RELEASED_QWEN3_VL_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "repetition_penalty": 1.0,
}
#: Qwen3-VL's `preprocessor_config.json` / `video_preprocessor_config.json` pixel budgets.
RELEASED_QWEN3_VL_IMAGE_PIXELS = (65536, 16777216)
RELEASED_QWEN3_VL_VIDEO_PIXELS = (4096, 25165824)
#: Hub ids of the released Qwen3-VL checkpoints and their `Qwen3VLConfig` (what `revseg train plan`
#: builds on the meta device when the hub is out of reach).
RELEASED_QWEN3_VL_ARCHITECTURES: dict[str, dict[str, Any]] = {
    f"Qwen/Qwen3-VL-{size}-Instruct": {
        **config,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
    }
    for size, config in RELEASED_QWEN3_VL_CONFIGS.items()
}
#: Each family's released image pixel budget `(min, max)` (its `preprocessor_config.json`).
RELEASED_IMAGE_PIXELS: dict[str, tuple[int, int]] = {
    "qwen2.5-vl": (RELEASED_MIN_PIXELS, RELEASED_MAX_PIXELS),
    "qwen2-vl": (RELEASED_MIN_PIXELS, RELEASED_MAX_PIXELS),
    "qwen3-vl": RELEASED_QWEN3_VL_IMAGE_PIXELS,
}
