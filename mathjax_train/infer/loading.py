"""Load what inference needs from a checkpoint directory: model config, params and tokenizer."""

from __future__ import annotations

import typing
from dataclasses import dataclass

import jax
from etils import epath

from mathjax_train.config import Dtype, ModelConfig
from mathjax_train.data.vocab import Tokenizer, load_tokenizer
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.infer.placement import engine_placement
from mathjax_train.model.lora import load_plain_params

INFERENCE_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class LoadedModel:
    cfg: ModelConfig
    params: dict
    tokenizer: Tokenizer
    params_version: int = 0  # counts assignments to `params` (rl sets new ones after each update)

    def __setattr__(self, name, value):
        if name == "params" and "params" in self.__dict__:
            self.__dict__["params_version"] = self.__dict__.get("params_version", 0) + 1
        super().__setattr__(name, value)

    @property
    def eos_ids(self) -> list[int]:
        """Every id that ends a completion: the model config's EOS ids and the tokenizer's."""
        tok = self.tokenizer.eos_id
        return sorted(set(self.cfg.eos_token_id) | ({tok} if tok is not None else set()))


def resolve_dtype(dtype: str | None) -> str | None:
    """`auto`: float32 on CPU (bf16 matmuls are slow there and drift from fp32 references), bfloat16
    on TPU/GPU. None or "" keeps the checkpoint's compute dtype."""
    if dtype == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    return dtype or None


def load_for_inference(ckpt_dir, dtype: str | None = "auto", tensor: int = 1) -> LoadedModel:
    """`dtype` (see resolve_dtype) overrides the compute dtype. An adapter checkpoint (LoRA) is merged
    onto its base here, so every caller samples from the merged model. The params are read straight onto
    the devices an engine with engine.tensor=`tensor` uses (infer/placement.py), never whole on one first."""
    d = epath.Path(ckpt_dir)
    cfg = ckpt.load_model_config(d)
    dtype = resolve_dtype(dtype)
    if dtype:
        cfg.dtype = typing.cast(Dtype, dtype)  # checked on the next line
        cfg.validate("--dtype")
    tokenizer = load_tokenizer(ckpt.resolve(d).tokenizer_dir)
    params = load_plain_params(d, cfg, engine_placement(tensor, cfg).param_shardings(cfg))
    return LoadedModel(cfg, params, tokenizer)
