"""The sampling flags `generate` and `evaluate` share, with GenerateConfig's defaults."""
from __future__ import annotations

from mathjax_train.config import GenerateConfig

SLOTS_HELP = "engine slots: rows decoded together (0 = 64 on CPU, 256 on TPU/GPU)"
DTYPES = ["auto", "float32", "bfloat16", "float16"]
DTYPE_HELP = "compute dtype: auto = float32 on CPU, bfloat16 on TPU/GPU"


def add_dtype_arg(s) -> None:
    s.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)


def add_sampling_args(s, *, max_new_tokens: int = GenerateConfig.max_new_tokens, stop_help: str) -> None:
    """--max-new-tokens, --temperature, --top-p, --top-k, --num-samples, --seed, --batch-size, --stop."""
    d = GenerateConfig
    s.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    s.add_argument("--temperature", type=float, default=d.temperature)
    s.add_argument("--top-p", type=float, default=d.top_p)
    s.add_argument("--top-k", type=int, default=d.top_k)
    s.add_argument("--num-samples", type=int, default=d.num_samples)
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--batch-size", type=int, default=d.batch_size, help=SLOTS_HELP)
    s.add_argument("--stop", action="append", default=[], help=stop_help)
