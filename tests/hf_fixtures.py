"""Tiny random HF checkpoints and tokenizers written by the tests themselves (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
    "The answer is 72. Let x be the number of apples; then 3x + 5 = 20, so x = 5.",
    "def add(a, b):\n    return a + b\nprint(add(2, 3))",
    "Compute \\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}. The answer is \\boxed{\\frac{5}{6}}.",
] * 20

VARIANTS = {
    # name: (model_type, extra HF config fields)
    "llama": ("llama", {}),
    "llama3": (
        "llama",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ),
    "mistral": ("mistral", {"sliding_window": 48, "head_dim": 24}),
    "qwen2": ("qwen2", {}),
    # QK-norm, head_dim 32 with hidden 96 over 4 heads (not hidden / heads), untied like Qwen3-8B
    "qwen3": ("qwen3", {"head_dim": 32, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}),
    "qwen3_tied": ("qwen3", {"head_dim": 16, "tie_word_embeddings": True}),  # tied like Qwen3-0.6B and 1.7B
    "tied": ("llama", {"tie_word_embeddings": True, "attention_bias": True}),
    # 6 layers, 5 local (window 12) : 1 global, each kind its own RoPE base; query_pre_attn_scalar != head_dim;
    # final logits soft-capped (Gemma 2's cap; Gemma 3 ships none) so the cap's path is tested
    "gemma3": (
        "gemma3_text",
        {
            "num_hidden_layers": 6,
            "head_dim": 32,
            "sliding_window": 12,
            "query_pre_attn_scalar": 24,
            "final_logit_softcapping": 30.0,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        },
    ),
    # mixtures of experts: Qwen3-MoE (QK-norm, head_dim 32; top-k probabilities not renormalized, its HF
    # default) and Mixtral (always renormalized; the expert width is intermediate_size)
    "qwen3_moe": (
        "qwen3_moe",
        {"head_dim": 32, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 48},
    ),
    "qwen3_moe_norm": (
        "qwen3_moe",
        {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 40, "norm_topk_prob": True},
    ),
    "mixtral": ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 64}),
}


def write_tokenizer(directory: Path, bos: bool = True) -> None:
    """A small byte-level BPE tokenizer.json (+ tokenizer_config.json) trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "TokenizersBackend"}
        )
    )


def hf_config(variant: str, kv_heads: int = 2, vocab_size: int = 320):
    import transformers

    model_type, extra = VARIANTS[variant]
    cls = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
        "gemma3_text": transformers.Gemma3TextConfig,
        "qwen3_moe": transformers.Qwen3MoeConfig,
        "mixtral": transformers.MixtralConfig,
    }[model_type]
    fields = dict(
        vocab_size=vocab_size,
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
    )
    fields.update(extra)
    return cls(**fields)


def make_hf_model(directory: Path, variant: str, kv_heads: int = 2, seed: int = 0):
    """Save a random tiny HF model (every weight perturbed, so biases and norms matter) and a tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(hf_config(variant, kv_heads), dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Gemma stores a norm's weight as the scale minus one (its norm multiplies by 1 + weight)
            offset = 1.0 if "norm" in name and model.config.model_type != "gemma3_text" else 0.0
            p.copy_(torch.randn_like(p) * 0.08 + offset)
    model.eval()
    model.save_pretrained(directory)
    write_tokenizer(directory)
    return model


def import_random_model(directory: Path, variant: str = "llama", seed: int = 0, kv_heads: int = 2):
    """`make_hf_model` under directory/hf, imported with `import-hf` as a float32 checkpoint at
    directory/ckpt. Returns (the HF model, the checkpoint path)."""
    from mathjax_train.cli import main

    model = make_hf_model(directory / "hf", variant, kv_heads=kv_heads, seed=seed)
    assert main(["import-hf", str(directory / "hf"), str(directory / "ckpt"), "--dtype", "float32"]) == 0
    return model, directory / "ckpt"
