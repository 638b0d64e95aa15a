"""Batched sampling with a KV cache."""
from mathjax_train.infer.generate import Generation, Generator, SamplingParams

__all__ = ["Generation", "Generator", "SamplingParams"]
