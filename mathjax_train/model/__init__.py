"""Flax decoder (LLaMA/Mistral/Qwen2 family), attention and KV cache."""
from mathjax_train.model.decoder import Decoder
from mathjax_train.model.kv_cache import init_cache

__all__ = ["Decoder", "init_cache"]
