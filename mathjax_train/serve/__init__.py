"""OpenAI-compatible HTTP server over `infer/`: /v1/models, /v1/completions, /v1/chat/completions."""
