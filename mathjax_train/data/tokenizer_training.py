"""Train a small byte-level BPE `tokenizer.json` on procedural SFT text, for from-scratch demo models.

The directory written loads with `data.vocab.load_tokenizer` and with transformers' AutoTokenizer:
`tokenizer.json` (BOS `<s>` prepended by its post-processor, like LLaMA) and `tokenizer_config.json`
(bos/eos/pad tokens). Byte-level, so any text encodes without unknown tokens.
"""

from __future__ import annotations

import json
import os

from etils import epath

from mathjax_train.config import InputError, TokenizerStageConfig

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")  # ids 0, 1, 2


def corpus(num_examples: int, seed: int, template: str, ending: str, levels: tuple[int, ...]):
    """Prompt and target texts of procedural train problems, formatted as the SFT tasks format them."""
    from mathjax_train.data import procedural
    from mathjax_train.data.sft_format import SftFormatter

    fmt = SftFormatter(template, ending)
    for rec in procedural.iterate(seed=seed, split="train", stop=num_examples, levels=levels):
        text = fmt(rec)
        yield text.prompt
        yield text.target


def build_tokenizer(out_dir: str | os.PathLike, cfg: TokenizerStageConfig, split_digits: bool = True) -> dict:
    """Train and write the tokenizer directory; returns a summary (vocab size, files, corpus size)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    cfg.validate()
    vocab_size = cfg.vocab_size
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise InputError(
            f"tokenizer.vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (the 256 bytes and "
            f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}"
        )
    if cfg.examples < 1:
        raise InputError(f"tokenizer.examples must be >= 1, got {cfg.examples}")
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # one token per digit: small models learn column arithmetic far better than with merged numbers
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = list(corpus(cfg.examples, cfg.seed, cfg.template, cfg.ending, tuple(cfg.levels)))
    tok.train_from_iterator(texts, trainer, length=len(texts))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tok.to_str())
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 1_000_000,
        "tokenizer_class": "TokenizersBackend",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return {
        "tokenizer_dir": str(out),
        "vocab_size": tok.get_vocab_size(),
        "corpus_texts": len(texts),
        "corpus_chars": sum(map(len, texts)),
        "files": ["tokenizer.json", "tokenizer_config.json"],
    }
