"""Flax decoder (LLaMA/Mistral/Qwen2/Qwen3 family), attention and KV cache."""

from mathjax_train.model.decoder import Decoder
from mathjax_train.model.kv_cache import flush_side, init_pages, init_side, page_bytes

__all__ = ["Decoder", "flush_side", "init_pages", "init_side", "page_bytes"]
