"""A tiny checkpoint whose greedy (or low-temperature) decoding follows a chosen token script.

Whole strings (code blocks, output blocks, answers) are added to the fixture tokenizer as single
tokens. Attention and MLP outputs are zeroed, so the last hidden state is the current token's
embedding; embeddings are one-hot and lm_head maps each scripted token to its successor. The
model is still a normal LLaMA checkpoint: import-hf, prefill, KV cache and sampling run as usual.
An output block is one token only if the executed output is exactly the scripted one, so the
script can only continue past a code run when the code really ran and printed what it should.
"""

from __future__ import annotations

import json
from pathlib import Path

from hf_fixtures import make_hf_model
from mathjax_train.cli import main

EOS = "</s>"


def make_forced_checkpoint(directory: Path, transitions: dict[str, str], added: list[str]) -> Path:
    """`transitions`: token text -> next token text (each must be ONE token after adding `added`).

    Returns the checkpoint directory (float32 compute).
    """
    import torch
    from tokenizers import Tokenizer

    hf = directory / "hf"
    model = make_hf_model(hf, "llama", kv_heads=2, seed=0)
    tok = Tokenizer.from_file(str(hf / "tokenizer.json"))
    tok.add_tokens(added)
    tok.save(str(hf / "tokenizer.json"))

    def one_id(text: str) -> int:
        if text == EOS:
            return 2
        ids = tok.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise AssertionError(f"{text!r} is {len(ids)} tokens, expected one")
        return ids[0]

    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    assert tok.get_vocab_size() <= vocab and len(transitions) <= hidden
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for slot, (src, dst) in enumerate(transitions.items()):
            emb = torch.zeros(hidden)
            emb[slot] = 1.0
            model.model.embed_tokens.weight[one_id(src)] = emb
            model.lm_head.weight[one_id(dst), slot] = 20.0
    model.save_pretrained(hf)
    ckpt = directory / "ckpt"
    assert main(["import-hf", str(hf), str(ckpt), "--dtype", "float32"]) == 0
    return ckpt


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# A tool-use script shared by the tool-generation and evaluate --tools tests: the decode only goes
# past a code block when the code really ran and printed the expected output block.
Q1, Q2, Q3 = "<|q1|>", "<|q2|>", "<|q3|>"
CODE1 = "```python\nx = 6 * 7\nprint(x)\n```\n"
CODE2 = "```python\nprint(x + 1)\n```\n"  # only works if x survived from the first block
CODE3 = "```python\nprint(undefined_name)\n```\n"
STOP_TOKEN = "```output"
OUT1, OUT2 = "```output\n42\n```\n", "```output\n43\n```\n"
OUT3 = "```output\nNameError: name 'undefined_name' is not defined\n```\n"
ANS1, ANS2, ANS3 = "The answer is \\boxed{43}.", "No code needed: \\boxed{7}.", "The variable was missing."
ADDED = [Q1, Q2, Q3, CODE1, CODE2, CODE3, STOP_TOKEN, OUT1, OUT2, OUT3, ANS1, ANS2, ANS3]
SCRIPT = {
    Q1: CODE1,
    CODE1: STOP_TOKEN,
    OUT1: CODE2,
    CODE2: STOP_TOKEN,
    OUT2: ANS1,
    ANS1: EOS,
    Q2: ANS2,
    ANS2: EOS,
    Q3: CODE3,
    CODE3: STOP_TOKEN,
    OUT3: ANS3,
    ANS3: EOS,
}
