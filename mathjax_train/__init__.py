"""mathjax-train: JAX/TPU training stack for math LLMs."""
