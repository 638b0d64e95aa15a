"""seqio vocabularies over tokenizer.json / tokenizer.model give the ids transformers gives."""

import io
import json

import numpy as np
import pytest
import tensorflow as tf

from hf_fixtures import CORPUS, write_tokenizer
from mathjax_train.config import ConfigError, TokenizerStageConfig
from mathjax_train.data.seqio_vocab import TokenizerVocabulary, tokenizer_dir
from mathjax_train.data.tokenizer_training import build_tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Natalia sold 48 clips in April and half as many in May.",
    "Compute $\\frac{1}{2} + \\frac{1}{3}$.\nThe answer is $\\boxed{\\frac{5}{6}}$.",
    "Below is an instruction that describes a task.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:",
    "unicode: π ≈ 3.14159, ∑ x² — déjà vu",
    "#### 1,234",
]


def _check_against_transformers(directory, texts=TEXTS):
    hf = transformers.AutoTokenizer.from_pretrained(str(directory))
    v = TokenizerVocabulary(directory)
    assert (v.bos_id, v.eos_id) == (hf.bos_token_id, hf.eos_token_id)
    for text in texts:
        assert v.encode_prompt(text) == hf(text).input_ids, text
        assert v.encode(text) == hf(text, add_special_tokens=False).input_ids, text
        assert v.decode(v.encode(text)) == hf.decode(hf(text, add_special_tokens=False).input_ids)
    return v, hf


def test_tokenizer_json_matches_transformers(tmp_path):
    write_tokenizer(tmp_path)
    v, hf = _check_against_transformers(tmp_path)
    assert v.kind == "tokenizers" and v.prefix_ids == (hf.bos_token_id,) and v.suffix_ids == ()
    assert v.unk_id == hf.unk_token_id
    assert v.vocab_size == len(hf)
    # targets: no BOS, one EOS at the end
    assert v.encode_target("x = 5") == hf("x = 5", add_special_tokens=False).input_ids + [hf.eos_token_id]


def test_tokenizer_without_bos_adds_nothing(tmp_path):
    write_tokenizer(tmp_path, bos=False)
    v, _ = _check_against_transformers(tmp_path)
    assert v.prefix_ids == () and v.suffix_ids == ()


def test_sentencepiece_model_matches_transformers(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    buf = io.BytesIO()
    # LLaMA-style settings: identity normalisation, whitespace kept, byte fallback
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS + TEXTS),
        model_writer=buf,
        vocab_size=400,
        model_type="bpe",
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_digits=True,
        minloglevel=2,
    )
    (tmp_path / "tokenizer.model").write_bytes(buf.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": True,
                "add_eos_token": False,
            }
        )
    )
    v, _ = _check_against_transformers(tmp_path)
    assert v.kind == "sentencepiece" and (v.bos_id, v.eos_id, v.unk_id) == (1, 2, 0)


def test_tf_encode_and_decode_match_python(tmp_path):
    write_tokenizer(tmp_path)
    v = TokenizerVocabulary(tmp_path)
    for text in TEXTS:
        assert v.encode_tf(tf.constant(text)).numpy().tolist() == v.encode(text)
    ragged = v.encode_tf(tf.constant(TEXTS[:3]))
    assert [r.tolist() for r in ragged.numpy()] == [v.encode(t) for t in TEXTS[:3]]
    ids = v.encode(TEXTS[0])
    assert v.decode_tf(tf.constant(ids)).numpy().decode() == v.decode(ids)
    # decoding stops at EOS, as SeqIO vocabularies do
    assert v.decode(ids + [v.eos_id] + ids) == v.decode(ids)
    two = tf.constant(np.array([ids[:5], ids[5:10]], np.int32))
    assert [s.decode() for s in v.decode_tf(two).numpy()] == [v.decode(ids[:5]), v.decode(ids[5:10])]


def test_vocabularies_compare_by_content(tmp_path):
    write_tokenizer(tmp_path / "a")
    write_tokenizer(tmp_path / "b")
    write_tokenizer(tmp_path / "c", bos=False)
    a, b, c = (TokenizerVocabulary(tmp_path / n) for n in "abc")
    assert a == b and a != c


def test_missing_eos_and_missing_tokenizer_are_named(tmp_path):
    write_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    with pytest.raises(ConfigError, match="eos_token"):
        TokenizerVocabulary(tmp_path)
    with pytest.raises(ConfigError, match="data.tokenizer"):
        tokenizer_dir("", "")
    # init_from may be a model dir or a training OUTPUT_DIR: the tokenizer is at its top level
    run = tmp_path / "run"
    (run / "checkpoints" / "7" / "params").mkdir(parents=True)
    (run / "checkpoints" / "7" / "commit_success.txt").write_text("")
    (run / "model_config.json").write_text("{}")
    assert tokenizer_dir("", str(run)) == str(run / "tokenizer")
    assert tokenizer_dir("", str(run / "checkpoints" / "7")) == str(run / "tokenizer")
    assert tokenizer_dir(str(tmp_path / "tok"), str(run)) == str(tmp_path / "tok")
    with pytest.raises(ConfigError, match="model_config.json: not found"):
        tokenizer_dir("", str(tmp_path / "nowhere"))


def test_built_tokenizer_loads_in_transformers_and_is_deterministic(tmp_path):
    info = build_tokenizer(tmp_path / "a", TokenizerStageConfig(vocab_size=512, examples=400))
    build_tokenizer(tmp_path / "b", TokenizerStageConfig(vocab_size=512, examples=400))
    assert info["vocab_size"] == 512
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()
    v, hf = _check_against_transformers(tmp_path / "a")
    assert hf.convert_ids_to_tokens([v.bos_id, v.eos_id, v.pad_id]) == ["<s>", "</s>", "<pad>"]
    assert v.prefix_ids == (v.bos_id,)
    # trained on the SFT text, so the prompt template compresses well
    prompt = TEXTS[2]
    assert len(v.encode(prompt)) < len(prompt.encode()) / 2
    with pytest.raises(ValueError, match="tokenizer.vocab_size must be >= "):
        build_tokenizer(tmp_path / "c", TokenizerStageConfig(vocab_size=100))
