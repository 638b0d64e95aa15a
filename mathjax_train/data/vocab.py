"""Tokenizers picked from a checkpoint directory: HF `tokenizer.json` or SentencePiece `tokenizer.model`.

`encode(text)` adds special tokens exactly as the HF tokenizer does by default: tokenizer.json's
own post-processor, unless tokenizer_config.json sets add_bos_token/add_eos_token explicitly
(then BOS/EOS are added by those flags, as transformers' TokenizersBackend does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from etils import epath

from mathjax_train.errors import ConfigError

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)


def _token_str(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


@dataclass
class Tokenizer:
    """A minimal tokenizer interface shared by both backends."""

    backend: Any  # tokenizers.Tokenizer or sentencepiece.SentencePieceProcessor, by `kind`
    kind: str  # "tokenizers" | "sentencepiece"
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    special_ids: set[int] = field(default_factory=set)
    chat_template: str | None = None
    config: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        if self.kind == "tokenizers":
            return self.backend.get_vocab_size(with_added_tokens=True)
        return self.backend.get_piece_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if self.kind == "tokenizers":
            return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)
        ids = list(self.backend.encode(text))
        if add_special_tokens:
            if self.config.get("add_bos_token", True) and self.bos_id is not None:
                ids = [self.bos_id] + ids
            if self.config.get("add_eos_token", False) and self.eos_id is not None:
                ids = ids + [self.eos_id]
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "tokenizers":
            return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        return self.backend.decode(ids)


def _load_tokenizers(path: epath.Path, config: dict) -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer, processors

    try:
        tok = HFTokenizer.from_str(path.read_text())
    except Exception as e:  # tokenizers raises its own Exception type
        raise ConfigError(f"{path}: cannot be read as a tokenizer.json: {e}") from None

    def ids(name: str) -> int | None:
        s = _token_str(config.get(name))
        return None if s is None else tok.token_to_id(s)

    bos_id, eos_id, pad_id = ids("bos_token"), ids("eos_token"), ids("pad_token")
    explicit = "add_bos_token" in config or "add_eos_token" in config
    if explicit or tok.post_processor is None:
        add_bos = bool(config.get("add_bos_token", False)) and bos_id is not None
        add_eos = bool(config.get("add_eos_token", False)) and eos_id is not None
        # both are strings whenever add_bos / add_eos is set ("" stands in for an unused one)
        bos, eos = _token_str(config.get("bos_token")) or "", _token_str(config.get("eos_token")) or ""
        single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
        pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
        special_tokens = ([(bos, bos_id)] if add_bos else []) + ([(eos, eos_id)] if add_eos else [])
        tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special_tokens)
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    return Tokenizer(tok, "tokenizers", bos_id, eos_id, pad_id, special, config.get("chat_template"), config)


def _load_sentencepiece(path: epath.Path, config: dict) -> Tokenizer:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(path.read_bytes())
    except Exception as e:  # sentencepiece raises RuntimeError/OSError variants
        raise ConfigError(f"{path}: cannot be read as a SentencePiece model: {e}") from None

    def piece_id(name: str, default: int) -> int | None:
        s = _token_str(config.get(name))
        if s is None:
            return default if default >= 0 else None
        i = sp.piece_to_id(s)
        return None if i == sp.unk_id() and s != sp.id_to_piece(sp.unk_id()) else i

    bos, eos, pad = (
        piece_id("bos_token", sp.bos_id()),
        piece_id("eos_token", sp.eos_id()),
        piece_id("pad_token", sp.pad_id()),
    )
    special = {i for i in (bos, eos, pad, sp.unk_id()) if i is not None and i >= 0}
    return Tokenizer(sp, "sentencepiece", bos, eos, pad, special, config.get("chat_template"), config)


def load_tokenizer(directory) -> Tokenizer:
    """Load the tokenizer of an HF or checkpoint directory; a missing one names the files expected."""
    d = epath.Path(directory)
    config: dict = {}
    cfg_path = d / "tokenizer_config.json"
    if cfg_path.exists():
        try:
            config = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{cfg_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    template = d / "chat_template.jinja"
    if "chat_template" not in config and template.exists():
        config["chat_template"] = template.read_text()
    if (d / "tokenizer.json").exists():
        return _load_tokenizers(d / "tokenizer.json", config)
    if (d / "tokenizer.model").exists():
        return _load_sentencepiece(d / "tokenizer.model", config)
    raise ConfigError(
        f"{d}: no tokenizer found; expected tokenizer.json (HF tokenizers) or tokenizer.model "
        "(SentencePiece) in this directory"
    )
