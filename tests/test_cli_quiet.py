"""A first run prints our progress, results and errors, not TensorFlow/CUDA/absl start-up lines;
`--verbose` (or MATHJAX_VERBOSE=1) brings the libraries' logs back."""

import json
import logging
import os
import subprocess
import sys

import pytest

from data_fixtures import setup_data
from hf_fixtures import make_hf_model
from mathjax_train.cli import main, quiet
from train_helpers import REPO, SMOKE

# Everything seen on a CPU machine with TensorFlow's CUDA build, and what GPU machines add.
NOISE = (
    "oneDNN",
    "cuInit",
    "cudart_stub",
    "Could not find cuda drivers",
    "Metadata file does not exist",
    "TF-TRT",
    "Unable to register cu",
    "absl::InitializeLog",
    "E0000 ",
    "W0000 ",
    "I0000 ",
    "WARNING:absl",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("quiet")
    make_hf_model(d / "hf", "llama", kv_heads=2)
    assert main(["import-hf", str(d / "hf"), str(d / "base")]) == 0
    (d / "prompts.jsonl").write_text(json.dumps({"prompt": "1 + 1 ="}) + "\n")
    (d / "problems.jsonl").write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    return d, setup_data(d / "data")


def cli(*args, env_extra=()):
    """The real console entry point in a fresh process, with the user's default environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    env.update(env_extra)
    proc = subprocess.run(
        [sys.executable, "-m", "mathjax_train.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_train_generate_data_stats_and_evaluate_print_no_library_noise(setup):
    """Reading a training checkpoint (not an import-hf one) is what made Orbax warn."""
    d, paths = setup
    train = d / "train"
    runs = {
        "train": [
            "train",
            "--config",
            str(SMOKE),
            f"output_dir={train}",
            f"init_from={d / 'base'}",
            "model.dtype=float32",
            "data.mixture=synthetic",
            f"data.jsonl=[{paths['synth']}]",
            "train.steps=1",
            "train.seq_len=256",
            "checkpoint.every_steps=1",
        ],
        "generate": [
            "generate",
            "--checkpoint",
            str(train),
            "--prompts",
            str(d / "prompts.jsonl"),
            "--output",
            str(d / "out.jsonl"),
            "--max-new-tokens",
            "2",
        ],
        "data stats": [
            "data",
            "stats",
            "--mixture",
            "gsm8k_sft",
            f"data.tokenizer={paths['tok']}",
            f"data.data_dir={paths['manual']}",
        ],
        "evaluate": [
            "evaluate",
            "--checkpoint",
            str(train),
            "--dataset",
            str(d / "problems.jsonl"),
            "--max-new-tokens",
            "2",
            "--output-dir",
            str(d / "eval"),
        ],
    }
    ours = {"train": "step 1/1 | loss", "generate": "100%", "evaluate": "100%"}  # our progress lines
    for name, args in runs.items():
        proc = cli(*args)
        printed = proc.stdout + proc.stderr
        assert not [p for p in NOISE if p in printed], (name, printed[-3000:])
        json.loads(proc.stdout.splitlines()[-1])  # our result line
        assert ours.get(name, "") in proc.stderr, (name, proc.stderr[-3000:])
    verbose = cli("--verbose", *runs["generate"])
    assert "Metadata file does not exist" in verbose.stderr  # Orbax, on every read of a training checkpoint


def test_noise_written_to_the_file_descriptor_is_dropped_and_the_rest_kept(capfd):
    with quiet.filtered_stderr():
        os.write(
            2,
            b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            b"I0000 00:00:1796127903.517098   19054 cudart_stub.cc:31] Could not find cuda drivers on your "
            b"machine, GPU will not be used.\n"
            b"E0000 00:00:1796127960.355052   19308 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
            b"E0000 00:00:1796127960.355052   19308 data.cc:1] a real error\n"
            b"Traceback (most recent call last):\n",
        )
    err = capfd.readouterr().err
    assert err == "E0000 00:00:1796127960.355052   19308 data.cc:1] a real error\nTraceback (most recent call last):\n"
    with quiet.filtered_stderr(quiet=False):
        os.write(2, b"I0000 00:00:1.0 1 x.cc:1] shown when verbose\n")
    assert "shown when verbose" in capfd.readouterr().err


def test_verbose_leaves_the_libraries_settings_alone(monkeypatch):
    from absl import logging as absl_logging

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # the import hook configure may install
    before = absl_logging.get_verbosity(), logging.getLogger("absl").level
    quiet.configure(verbose=True)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert (absl_logging.get_verbosity(), logging.getLogger("absl").level) == before
    for value, want in (("1", True), ("true", True), ("0", False), ("", False), ("no", False)):
        monkeypatch.setenv(quiet.VERBOSE_ENV, value)
        assert quiet.verbose_requested(False) is want, value
    assert quiet.verbose_requested(True)
