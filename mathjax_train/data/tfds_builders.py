"""TFDS builders for GSM8K and Hendrycks MATH that read the manual directory (no download).

Registered as ``mathjax_gsm8k`` and ``mathjax_hendrycks_math``: TFDS's own catalog already has a
``gsm8k`` (which downloads from GitHub), and reusing that name breaks TFDS's lazy registry, so ours
are prefixed. ``prepare(name, data_dir, manual_dir)`` builds one and returns the builder; the
manual directory is the argument, else ``$MATHJAX_DATA_DIR`` (see manual_dir.py).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from mathjax_train.data import manual_dir as manual
from mathjax_train.data import problems
from mathjax_train.errors import InputError


def gsm8k_examples(path, split: str):
    """(key, example) pairs from one GSM8K JSONL file (read by data/problems.py; strict)."""
    for p in problems.read_gsm8k(path, split):
        yield p.id, {"id": p.id, "question": p.question, "answer": p.solution, "final_answer": p.answer}


def _manual_root(dl_manager) -> str | None:
    """The DownloadConfig manual_dir if it was given and is non-empty, else None (-> env var)."""
    try:
        return os.fspath(dl_manager.manual_dir)
    except (AssertionError, ValueError):  # tfds: manual dir not enabled / missing / empty
        return None


def math_examples(path, split: str):
    """(key, example) pairs from one MATH JSONL file (train/test or the prm800k MATH500 layout;
    read by data/problems.py; strict)."""
    for p in problems.read_math(path):
        yield (
            p.id,
            {
                "problem": p.question,
                "solution": p.solution,
                "answer": p.answer,
                "level": p.level,
                "type": p.subject,
                "subject": problems.math_folder(p),
                "unique_id": p.id,
            },
        )


class MathjaxGsm8k(tfds.core.GeneratorBasedBuilder):
    """GSM8K (openai/grade-school-math) from the manual directory: splits train (7473), test (1319).

    Features: id (``gsm8k/<split>/<row>``), question, answer (full solution with calculator
    annotations and the ``#### x`` line), final_answer (the x, commas removed).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Read from gsm8k/{train,test}.jsonl in the manual directory."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual.instructions(None, manual.LAYOUT["gsm8k"].values())

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "question": tfds.features.Text(),
                    "answer": tfds.features.Text(),
                    "final_answer": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/openai/grade-school-math",
        )

    def _split_generators(self, dl_manager):
        files = manual.dataset_files("gsm8k", _manual_root(dl_manager))
        return {split: gsm8k_examples(path, split) for split, path in files.items()}

    def _generate_examples(self, path, split):  # pragma: no cover - TFDS calls the split generators
        yield from gsm8k_examples(path, split)


class MathjaxHendrycksMath(tfds.core.GeneratorBasedBuilder):
    """Hendrycks MATH from the manual directory: splits train (7500), test (5000), math500 (500,
    read from math/math500.jsonl, the prm800k subset).

    Features: problem, solution, answer (last ``\\boxed{}``), level (int 1-5; the two
    ``"Level ?"`` rows of the original data become 0), type ("Algebra"), subject ("algebra"),
    unique_id (``train/algebra/0.json``).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Read from math/{train,test,math500}.jsonl in the manual directory."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = manual.instructions(None, manual.LAYOUT["math"].values())

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "problem": text(),
                    "solution": text(),
                    "answer": text(),
                    "level": tfds.features.Scalar(np.int32),
                    "type": text(),
                    "subject": text(),
                    "unique_id": text(),
                }
            ),
            supervised_keys=None,
            homepage="https://github.com/hendrycks/math",
        )

    def _split_generators(self, dl_manager):
        files = manual.dataset_files("math", _manual_root(dl_manager))
        return {split: math_examples(path, split) for split, path in files.items()}

    def _generate_examples(self, path, split):  # pragma: no cover
        yield from math_examples(path, split)


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "gsm8k": MathjaxGsm8k,
    "hendrycks_math": MathjaxHendrycksMath,
    "math": MathjaxHendrycksMath,
}


def prepare(name: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None):
    """Build (once; reused if already prepared) and return the builder for ``name`` ("gsm8k",
    "hendrycks_math"/"math") under ``data_dir``, reading files from the manual directory."""
    if name not in BUILDERS:
        raise InputError(f"unknown dataset {name!r}; valid: {sorted(BUILDERS)}")
    root = manual.resolve_root(manual_dir)
    builder = BUILDERS[name](data_dir=os.fspath(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(root),
            try_download_gcs=False,
            compute_stats=tfds.download.ComputeStatsMode.SKIP,
        )
    )
    return builder
