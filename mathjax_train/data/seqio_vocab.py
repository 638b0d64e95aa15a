"""`seqio.Vocabulary` over a checkpoint's tokenizer: HF `tokenizer.json` or SentencePiece `tokenizer.model`.

`encode` adds no special tokens (the SeqIO convention); `encode_prompt` adds exactly what the HF
tokenizer adds by default (e.g. BOS), so training prompts match what `generate` feeds the model.
BOS/EOS/UNK/PAD ids are the HF tokenizer's own.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import seqio
import tensorflow as tf

from mathjax_train.data.vocab import Tokenizer, load_tokenizer
from mathjax_train.errors import ConfigError

_PROBES = ("a", "7 + 5 = 12")


def _special_wrapping(tok: Tokenizer, where: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prefix, suffix) ids the tokenizer adds around a single text by default (e.g. ((bos,), ()))."""
    found = set()
    for probe in _PROBES:
        plain, full = tok.encode(probe, add_special_tokens=False), tok.encode(probe, add_special_tokens=True)
        starts = [i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain]
        if not starts:
            raise ConfigError(
                f"{where}: the tokenizer's special tokens do not wrap the text as prefix/suffix "
                f"({probe!r}: {plain} vs {full})"
            )
        i = starts[0]
        found.add((tuple(full[:i]), tuple(full[i + len(plain) :])))
    if len(found) != 1:
        raise ConfigError(f"{where}: the special tokens added by the tokenizer depend on the text: {sorted(found)}")
    return found.pop()


def _text(x) -> str:
    """A string from what tf.numpy_function passes: bytes, or a 0-d object array of bytes."""
    x = x.item() if isinstance(x, np.ndarray) else x
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _ids_tf(encode, s: tf.Tensor) -> tf.Tensor:
    """`encode` (text -> ids) applied to a scalar string tensor through tf.numpy_function."""
    ids = tf.numpy_function(lambda x: np.asarray(encode(_text(x)), np.int32), [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids


class TokenizerVocabulary(seqio.Vocabulary):
    """A SeqIO vocabulary backed by `data.vocab.Tokenizer` (tokenizers or sentencepiece backend)."""

    def __init__(self, tokenizer_dir: str | os.PathLike):
        super().__init__(extra_ids=0)
        self.directory = os.fspath(tokenizer_dir)
        self.tokenizer = load_tokenizer(tokenizer_dir)
        if self.tokenizer.eos_id is None:
            raise ConfigError(f"{self.directory}: the tokenizer has no eos_token; SFT targets need one to end on")
        self.prefix_ids, self.suffix_ids = _special_wrapping(self.tokenizer, self.directory)
        self.fingerprint = self._hash_files()  # identifies the tokenizer files (cache keys, equality)

    def _hash_files(self) -> str:
        from etils import epath

        h = hashlib.sha256()
        for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
            p = epath.Path(self.directory) / name
            if p.exists():
                h.update(name.encode() + b"\0" + p.read_bytes())
        return h.hexdigest()

    @property
    def kind(self) -> str:
        return self.tokenizer.kind

    @property
    def bos_id(self) -> int | None:
        return self.tokenizer.bos_id

    @property
    def eos_id(self) -> int:
        eos = self.tokenizer.eos_id
        assert eos is not None, "__init__ refuses a tokenizer without an eos_token"
        return eos

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else seqio.PAD_ID

    @property
    def unk_id(self) -> int | None:
        backend = self.tokenizer.backend
        if self.kind == "sentencepiece":
            return backend.unk_id()
        unk = self.tokenizer.config.get("unk_token")
        unk = unk.get("content") if isinstance(unk, dict) else unk
        return backend.token_to_id(unk) if unk else None

    @property
    def _base_vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def _encode(self, s: str) -> list[int]:
        return self.tokenizer.encode(s, add_special_tokens=False)

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def encode_prompt(self, s: str) -> list[int]:
        """Ids exactly as the HF tokenizer gives them by default (special tokens included)."""
        return [*self.prefix_ids, *self._encode(s), *self.suffix_ids]

    def encode_target(self, s: str) -> list[int]:
        """Ids of an SFT target: no BOS, and EOS appended unless the text already produced one
        (chat templates write their own end-of-turn token)."""
        ids = self._encode(s)
        return ids if self.eos_id in ids else [*ids, self.eos_id]

    def encode_prompt_tf(self, s: tf.Tensor) -> tf.Tensor:
        """`encode_prompt` of a scalar string tensor, inside a tf.data pipeline."""
        return _ids_tf(self.encode_prompt, s)

    def encode_target_tf(self, s: tf.Tensor) -> tf.Tensor:
        """`encode_target` of a scalar string tensor, inside a tf.data pipeline."""
        return _ids_tf(self.encode_target, s)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        if s.shape.rank == 0:
            return _ids_tf(self._encode, s)
        if s.shape.rank == 1:

            def many(xs):
                rows = [self._encode(_text(x)) for x in xs]
                return np.asarray([i for r in rows for i in r], np.int32), np.asarray([len(r) for r in rows], np.int64)

            flat, lengths = tf.numpy_function(many, [s], (tf.int32, tf.int64), stateful=False)
            flat.set_shape([None])
            lengths.set_shape([None])
            return tf.RaggedTensor.from_row_lengths(flat, lengths)
        raise ValueError(f"TokenizerVocabulary.encode_tf takes a scalar or 1-D string tensor, got rank {s.shape.rank}")

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def dec(x):
            if x.ndim == 1:
                return np.asarray(self._decode(x.tolist()).encode("utf-8"), object)
            return np.asarray(
                [self._decode(r.tolist()).encode("utf-8") for r in x.reshape(-1, x.shape[-1])], object
            ).reshape(x.shape[:-1])

        out = tf.numpy_function(dec, [ids], tf.string, stateful=False)
        out.set_shape(ids.shape[:-1])
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, TokenizerVocabulary) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"TokenizerVocabulary({self.directory!r}, kind={self.kind}, size={self.vocab_size})"


def tokenizer_dir(data_tokenizer: str, init_from: str) -> str:
    """The tokenizer directory: `data.tokenizer`, else `init_from`/tokenizer; an error names both keys."""
    if data_tokenizer:
        return data_tokenizer
    if init_from:
        from mathjax_train.model.checkpoint import resolve  # OUTPUT_DIR, step dirs and import-hf dirs alike

        return str(resolve(init_from).tokenizer_dir)
    raise ConfigError(
        "data.tokenizer: no tokenizer; set data.tokenizer=DIR (e.g. one written by "
        "`mathjax-train data build-tokenizer`) or init_from=CHECKPOINT_DIR"
    )
