"""SeqIO tasks and mixtures: well-formed examples, the same ids through tf.data and the trainer's path,
rates from config, strict JSONL errors, and no training on test splits."""

import itertools
import json

import pytest
import seqio

from data_fixtures import (
    GSM_TEST,
    GSM_TRAIN,
    MATH500,
    MATH_TEST,
    MATH_TRAIN,
    config,
    packed_ids,
    segments_of,
    setup_data,
    write_jsonl,
)
from mathjax_train.errors import ConfigError
from mathjax_train.data import pipeline, tasks
from mathjax_train.data.jsonl_source import JsonlFormatError
from mathjax_train.data.seqio_vocab import TokenizerVocabulary
from mathjax_train.data.sources import make_train_iterator


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return setup_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def vocab(paths):
    return TokenizerVocabulary(paths["tok"])


def _examples(name, split, n=None):
    ds = seqio.get_mixture_or_task(name).get_dataset(sequence_length=None, split=split, shuffle=False)
    return list(itertools.islice(ds.as_numpy_iterator(), n))


SIZES = [
    ("gsm8k_sft", "train", len(GSM_TRAIN)),
    ("gsm8k_sft", "test", len(GSM_TEST)),
    ("math_sft", "train", len(MATH_TRAIN)),
    ("math_sft", "test", len(MATH_TEST)),
    ("math_sft", "math500", len(MATH500)),
    ("synthetic", "train", 40),
]


def test_every_task_yields_well_formed_examples(paths, vocab):
    tasks.register(config(paths).data, vocab)
    for name, split, size in SIZES + [
        ("procedural_gsm", "train", None),
        ("procedural_math", "heldout", None),
        ("procedural", "train", None),
    ]:
        rows = _examples(name, split, 6 if size is None else None)
        if size is not None:
            assert len(rows) == size, (name, split)
        for ex in rows:
            inputs, targets = ex["inputs"].tolist(), ex["targets"].tolist()
            assert inputs[0] == vocab.bos_id and vocab.bos_id not in targets, name
            assert targets[-1] == vocab.eos_id and targets.count(vocab.eos_id) == 1, name
            assert max(inputs + targets) < vocab.vocab_size
            prompt, target = ex["inputs_pretokenized"].decode(), ex["targets_pretokenized"].decode()
            assert vocab.decode(inputs) == prompt and vocab.decode(targets) == target
            assert prompt.startswith("Below is an instruction") and prompt.endswith("### Response:")
            answer = ex["answer"].decode()
            assert target.endswith(f"#### {answer}") or not answer, (name, target)
            assert "<<" not in target  # GSM8K calculator annotations are removed


def test_template_and_ending_come_from_config(paths, vocab):
    tasks.register(config(paths, "data.template=question_answer", "data.ending=boxed").data, vocab)
    ex = _examples("gsm8k_sft", "train", 1)[0]
    assert ex["inputs_pretokenized"].decode() == f"Question: {GSM_TRAIN[0]['question']}\nAnswer:"
    assert ex["targets_pretokenized"].decode().endswith("The answer is $\\boxed{8}$.")
    math = _examples("math_sft", "train", 1)[0]  # already boxed: not boxed twice
    assert math["targets_pretokenized"].decode() == " " + MATH_TRAIN[0]["solution"]
    tasks.register(config(paths, "data.calculator=true").data, vocab)  # keep <<3*4=12>> annotations
    ex = _examples("gsm8k_sft", "train", 1)[0]
    assert ex["targets_pretokenized"].decode() == GSM_TRAIN[0]["answer"]


def test_seqio_path_and_trainer_path_give_the_same_ids(paths, vocab):
    cfg = config(paths)
    tasks.register(cfg.data, vocab)
    shard = seqio.ShardInfo(index=1, num_shards=3)
    for name, n in (("synthetic", None), ("procedural", 8)):
        task = seqio.get_mixture_or_task(name)
        ds = task.get_dataset(sequence_length=None, split="train", shuffle=False, shard_info=shard)
        via_seqio = [(e["inputs"].tolist(), e["targets"].tolist()) for e in itertools.islice(ds.as_numpy_iterator(), n)]
        reader = pipeline.TaskReader(name, task.source, vocab, "train", shard, seed=0)
        if reader.size is None:
            via_reader = [reader.example(j)[:2] for j in range(n)]
        else:  # the reader shuffles per epoch; compare as sets of examples and count
            assert reader.size == len(via_seqio) == len(range(1, 40, 3))
            via_reader = [reader.example(j)[:2] for j in range(reader.size)]
            via_reader, via_seqio = sorted(via_reader), sorted(via_seqio)
        assert via_reader == via_seqio, name


def _registered_rates(name):
    provider = seqio.get_mixture_or_task(name)
    if isinstance(provider, seqio.Mixture):
        return {t.name: float(provider.get_rate(t)) for t in provider.tasks}
    return {name: 1.0}


def _packed_examples(batch):
    """(ids, number of loss-weighted ids) of every example packed in a batch: ids = prompt + target."""
    for r, idx in segments_of(batch):
        yield tuple(packed_ids(batch, r, idx)), int(batch["loss_weights"][r, idx].sum())


def test_the_trainer_iterator_yields_what_seqio_get_dataset_yields(paths, vocab):
    """One epoch of the trainer's packed batches for a host holds exactly the examples that
    `seqio.get_mixture_or_task(task).get_dataset(...)` yields for that host's shard, each task's once,
    with the loss on the target ids only; the trainer never reads the registry (it builds its tasks)."""
    cfg = config(paths, "data.mixture=gsm8k_math_synthetic", seq_len=512)
    shard = seqio.ShardInfo(index=1, num_shards=2)
    for name in tasks.TASKS:  # nothing left by other tests: the trainer builds its tasks and registers none
        seqio.TaskRegistry.remove(name)
    it = pipeline.make_iterator(cfg, rows=4, shard_index=1, num_shards=2, num_epochs=1)
    from_trainer = sorted(ex for batch in it for ex in _packed_examples(batch))
    assert it.stats()["truncated"] == it.stats()["dropped"] == 0
    with pytest.raises(ValueError, match="synthetic"):
        seqio.get_mixture_or_task("synthetic")
    tasks.register(cfg.data, vocab)
    from_seqio = []
    for name in _registered_rates("gsm8k_math_synthetic"):
        ds = seqio.get_mixture_or_task(name).get_dataset(
            sequence_length=None, split="train", shuffle=False, shard_info=shard
        )
        from_seqio += [
            (tuple(ex["inputs"].tolist() + ex["targets"].tolist()), len(ex["targets"])) for ex in ds.as_numpy_iterator()
        ]
    assert len(from_seqio) == len(range(1, len(GSM_TRAIN), 2)) + len(range(1, len(MATH_TRAIN), 2)) + 20
    assert from_trainer == sorted(from_seqio)


def test_mixtures_are_registered_with_rates_and_overrides(paths, vocab):
    cfg = config(paths, "data.mixture=gsm8k_math_synthetic")
    tasks.register(cfg.data, vocab)
    assert _registered_rates("gsm8k_math_synthetic") == {"gsm8k_sft": 0.5, "math_sft": 0.5, "synthetic": 3.0}
    assert _registered_rates("procedural_mix") == {"procedural_gsm": 1.0, "procedural_math": 1.0}
    assert _registered_rates("math_sft") == {"math_sft": 1.0}
    cfg = config(paths, "data.mixture=gsm8k_math_synthetic", "data.rates={synthetic: 1.0, math_sft: 0}")
    tasks.register(cfg.data, vocab)
    assert _registered_rates("gsm8k_math_synthetic") == {"gsm8k_sft": 0.5, "synthetic": 1.0}
    with pytest.raises(ConfigError, match=r"data.rates.procedural: not a task of 'gsm8k_math'"):
        tasks.mixture_rates("gsm8k_math", {"procedural": 1.0})
    with pytest.raises(ConfigError, match="data.mixture: 'nope' is not a mixture or task"):
        tasks.mixture_rates("nope", {})
    with pytest.raises(ConfigError, match="data.rates.procedural_gsm: must be >= 0"):
        config(paths, "data.mixture=procedural_mix", "data.rates={procedural_gsm: -1}")


def test_test_splits_are_never_trained_on(paths):
    cfg = config(paths, "data.mixture=gsm8k_sft")
    for split in ("test", "math500"):
        with pytest.raises(ValueError, match="evaluation only"):
            make_train_iterator(cfg, rows=2, split=split)
    it = make_train_iterator(cfg, rows=2)  # the trainer's entry point reaches this pipeline
    assert isinstance(it, pipeline.SftMixtureIterator) and it.readers["gsm8k_sft"].split == "train"
    with pytest.raises(ValueError, match="no split 'heldout'"):
        pipeline.make_iterator(cfg, rows=2, split="heldout")


def test_malformed_jsonl_names_path_line_and_problem(paths, tmp_path):
    good = json.dumps({"question": "q", "solution": "s", "answer": "1"})
    bad_json = write_jsonl(tmp_path / "bad.jsonl", [])
    bad_json.write_text(good + "\n\n" + '{"question": "q", "solution": "s",\n')
    with pytest.raises(JsonlFormatError, match=rf"{bad_json}:3: invalid JSON"):
        make_train_iterator(config(paths, "data.mixture=synthetic", f"data.jsonl=[{bad_json}]"), rows=2)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(good + "\n" + json.dumps({"question": "q", "answer": "1"}) + "\n")
    with pytest.raises(JsonlFormatError, match=rf"{missing}:2: field 'solution': missing required field"):
        make_train_iterator(config(paths, "data.mixture=synthetic", f"data.jsonl=[{missing}]"), rows=2)
    typed = tmp_path / "typed.jsonl"
    typed.write_text(json.dumps({"question": "q", "solution": "s", "answer": [1]}) + "\n")
    with pytest.raises(JsonlFormatError, match=rf"{typed}:1: field 'answer': expected"):
        make_train_iterator(config(paths, "data.mixture=synthetic", f"data.jsonl=[{typed}]"), rows=2)
    with pytest.raises(ConfigError, match="data.jsonl"):
        make_train_iterator(config(paths, "data.mixture=synthetic", "data.jsonl=[]"), rows=2)


def test_missing_manual_dir_names_the_files(paths, tmp_path, monkeypatch):
    monkeypatch.delenv("MATHJAX_DATA_DIR", raising=False)
    cfg = config(paths, "data.mixture=gsm8k_sft", f"data.data_dir={tmp_path}")
    with pytest.raises(FileNotFoundError, match="gsm8k/train.jsonl"):
        make_train_iterator(cfg, rows=2)


def test_chat_template_targets_end_with_one_eos(paths, tmp_path):
    import shutil

    tok = tmp_path / "chat_tok"
    shutil.copytree(paths["tok"], tok)
    cfg_file = tok / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["chat_template"] = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
        "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    cfg_file.write_text(json.dumps(cfg))
    vocab = TokenizerVocabulary(tok)
    tasks.register(config(dict(paths, tok=str(tok)), "data.template=chat").data, vocab)
    ex = _examples("gsm8k_sft", "train", 1)[0]
    assert ex["inputs_pretokenized"].decode() == f"<|user|>{GSM_TRAIN[0]['question']}\n<|assistant|>"
    target = ex["targets"].tolist()
    assert ex["targets_pretokenized"].decode().endswith("#### 8</s>\n")
    assert target.count(vocab.eos_id) == 1 and target[-1] != vocab.eos_id  # the template's own end token
