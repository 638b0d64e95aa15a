"""Pick the training batch source named by `data.mixture` for this host's shard."""

from __future__ import annotations

from mathjax_train.config import Config
from mathjax_train.data.batches import BatchIterator
from mathjax_train.data.toy_copy import ToyCopyIterator

TOY_SOURCES = ("toy_copy",)


def make_train_iterator(
    cfg: Config, *, rows: int, shard_index: int = 0, num_shards: int = 1, split: str = "train"
) -> BatchIterator:
    """This host's iterator: `rows` sequences of `train.seq_len` per batch, shard `shard_index`."""
    name = cfg.data.mixture
    if name == "toy_copy":
        return ToyCopyIterator(
            cfg.model.vocab_size, rows, cfg.train.seq_len, seed=cfg.data.seed, shard_index=shard_index
        )
    from mathjax_train.data import pipeline  # SeqIO and TensorFlow: imported only for real mixtures; it checks the name

    return pipeline.make_train_iterator(cfg, rows=rows, shard_index=shard_index, num_shards=num_shards, split=split)
