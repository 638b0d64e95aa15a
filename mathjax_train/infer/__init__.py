"""The sampling engine (continuous batching over a paged KV cache) and what its callers share."""

from mathjax_train.infer.params import Completion, SamplingParams, sample_seed

__all__ = ["Completion", "SamplingParams", "sample_seed"]
