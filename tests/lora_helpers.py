"""A random LoRA adapter saved as our checkpoint and exported both ways (PEFT adapter and merged HF model): what the
PEFT comparisons of test_lora and test_lora_smollm2 start from."""

from __future__ import annotations

import jax
import numpy as np

from mathjax_train.cli import main
from mathjax_train.config import LoraConfig
from mathjax_train.convert.import_hf import copy_tokenizer_files
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.model import lora as lora_params


def export_random_adapter(base_ckpt, cfg, lora: LoraConfig, scale: float, tmp_path):
    """N(0, scale) adapters on `base_ckpt` saved under tmp_path/adapter, exported to tmp_path/peft (PEFT) and
    tmp_path/merged (merged HF model); returns the adapter directory and the adapters."""
    adapters, _ = lora_params.abstract_trees(cfg, lora)
    keys = iter(jax.random.split(jax.random.PRNGKey(0), len(jax.tree_util.tree_leaves(adapters))))
    adapters = jax.tree_util.tree_map(lambda s: np.asarray(jax.random.normal(next(keys), s.shape)) * scale, adapters)
    out = tmp_path / "adapter"
    ckpt.save_params(out, adapters)
    ckpt.save_model_config(out, cfg)
    lora_params.save_adapter_meta(out, str(base_ckpt), lora)
    copy_tokenizer_files(ckpt.resolve(base_ckpt).tokenizer_dir, out / ckpt.TOKENIZER_DIR)
    assert main(["export-hf", "--adapter", str(out), str(tmp_path / "peft")]) == 0
    assert main(["export-hf", str(out), str(tmp_path / "merged")]) == 0
    return out, adapters
