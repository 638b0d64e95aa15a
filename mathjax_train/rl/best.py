"""The step of an RL run that scores best on `rl.validation`, kept as OUTPUT_DIR/best.

RL's held-out curve rises and falls; choosing a step by its held-out score would be choosing on the
test set. The validation set (disjoint from the held-out one) chooses instead, and OUTPUT_DIR/best is
a model directory (model_config.json, params/, tokenizer/, best.json) that `evaluate`, `generate`,
`export-hf` and `init_from` read like any other.
"""

from __future__ import annotations

import json

import jax
from etils import epath

from mathjax_train.config import ModelConfig
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.parallel.host_gather import barrier

BEST_DIR = "best"
BEST_FILE = "best.json"


def improves(best: dict | None, accuracy: float) -> bool:
    """Whether `accuracy` beats the best so far (a tie keeps the earlier, less trained step)."""
    return best is None or accuracy > best["validation_accuracy"]


def save_best(output_dir, params, model_cfg: ModelConfig, record: dict) -> epath.Path:
    """Write `params` as OUTPUT_DIR/best with `record` ({step, validation_accuracy}) in best.json. The new
    directory is complete before it replaces the old one: a crash while writing it leaves the previous best.
    On several hosts every host calls it (each writes its shards of the parameters); process 0 does the rest."""
    from mathjax_train.convert.import_hf import copy_tokenizer_files

    main = jax.process_index() == 0
    out = epath.Path(output_dir)
    best, partial = out / BEST_DIR, out / f"{BEST_DIR}.partial"
    if main and partial.exists():
        partial.rmtree()
    barrier("rl:best cleared")
    model_ckpt.save_params(partial, params)
    if main:
        model_ckpt.save_model_config(partial, model_cfg)
        copy_tokenizer_files(out / model_ckpt.TOKENIZER_DIR, partial / model_ckpt.TOKENIZER_DIR)
        (partial / BEST_FILE).write_text(json.dumps(record, indent=2))
        if best.exists():
            best.rmtree()
        partial.rename(best)
    barrier("rl:best written")
    return best
