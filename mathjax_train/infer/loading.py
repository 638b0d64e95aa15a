"""Load what inference needs from a checkpoint directory: model config, params and tokenizer."""
from __future__ import annotations

from dataclasses import dataclass

from etils import epath

from mathjax_train.config import ModelConfig
from mathjax_train.data.vocab import Tokenizer, load_tokenizer
from mathjax_train.model import checkpoint as ckpt


@dataclass
class LoadedModel:
    cfg: ModelConfig
    params: dict
    tokenizer: Tokenizer


def load_for_inference(ckpt_dir, dtype: str | None = None) -> LoadedModel:
    """`dtype` overrides the compute dtype (e.g. float32 on CPU, where bf16 matmuls are slow)."""
    d = epath.Path(ckpt_dir)
    cfg = ckpt.load_model_config(d)
    if dtype:
        cfg.dtype = dtype
        cfg.validate("--dtype")
    tokenizer = load_tokenizer(ckpt.resolve(d).tokenizer_dir)
    params = ckpt.load_params(d, cfg)
    return LoadedModel(cfg, params, tokenizer)
