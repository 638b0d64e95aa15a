"""A random LoRA adapter saved as our checkpoint and exported both ways (PEFT adapter and merged HF model), and the
comparison against PEFT in float64 that test_lora, test_moe and test_gemma3 make of it."""

from __future__ import annotations

import copy

import jax
import numpy as np
import peft
import torch
import transformers

from mathjax_train.cli import main
from mathjax_train.config import LoraConfig
from mathjax_train.convert.import_hf import copy_tokenizer_files
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.model import lora as lora_params
from precision import float32_logit_tolerance


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


def assert_matches_peft_float64(hf_model, tmp_path, ids, ours: dict, num_layers: int, widest: int, prepare=None):
    """PEFT's float64 forward of tmp_path/peft on `hf_model` is the reference: PEFT in float32, the merged HF export
    (tmp_path/merged) and each of `ours` (name -> logits on `ids`) lie within the float32 budget of it
    (tests/precision.py); the adapters move the model. `prepare` adjusts each PEFT base (e.g. its experts' kernel)."""

    def logits(model):
        with torch.no_grad():
            return model(torch.tensor(np.asarray(ids, np.int64))).logits.numpy()

    peft_logits = {}
    for dtype in (torch.float32, torch.float64):
        base = copy.deepcopy(hf_model).to(dtype).eval()
        if prepare is not None:
            prepare(base)
        peft_logits[dtype] = logits(peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval())
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    reference = peft_logits[torch.float64].astype(np.float64)
    assert np.abs(logits(hf_model.eval()) - reference).max() > 0.1  # the adapters change the model
    tol = float32_logit_tolerance(reference, num_layers, widest)
    named = {"peft in float32": peft_logits[torch.float32], **ours, "our merged HF export": logits(merged)}
    for name, got in named.items():
        np.testing.assert_allclose(got, reference, atol=tol, rtol=0, err_msg=name)
