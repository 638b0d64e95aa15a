"""`generate` and `evaluate` on a pod: each host samples its shard of the rows / problems (i % n == index,
parallel/host_shard.py) with its own engine, resumes it on its own, and the host finishing last joins the
shards into what one host would have written; two real jax.distributed processes on localhost do the same."""

import json
import os
import socket
import subprocess
import sys

import pytest

from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.config import EvalConfig, GenerateConfig
from mathjax_train.eval import harness
from mathjax_train.parallel import host_shard
from train_helpers import REPO

PROMPTS = ["a b c", "def add(a, b):", "x", "The answer is 4" * 3, "Natalia sold 48 clips", "print(2)", "7 + 7 ="]
GEN = ("--max-new-tokens", "6", "--num-samples", "2", "--temperature", "0.9", "--seed", "5", "--batch-size", "4")
QUESTIONS = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (10, 5), (7, 7), (2, 9)]]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return import_random_model(tmp_path_factory.mktemp("shards"), seed=2)[1]


def _prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


def _generate(capsys, ckpt, prompts, out, *flags) -> dict:
    assert (
        main(["generate", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--output", str(out), *GEN, *flags])
        == 0
    )
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_shards_resume_and_join_into_the_one_host_output(ckpt, tmp_path, capsys):
    prompts = _prompts(tmp_path)
    single = _generate(capsys, ckpt, prompts, tmp_path / "one.jsonl")
    assert single["prompts"] == 7 and "num_shards" not in single
    whole = _lines(tmp_path / "one.jsonl")

    out = tmp_path / "pod.jsonl"
    first = _generate(capsys, ckpt, prompts, out, "--shard-index", "1", "--num-shards", "3", "--tensor", "2")
    assert first["prompts"] == 2 and first["joined"] is None and not out.exists()  # rows 1 and 4; shards 0, 2 to do
    assert _lines(tmp_path / "pod.jsonl.shard-1-of-3") == [whole[1], whole[4]]  # split over 2 devices: same samples
    s0 = _generate(capsys, ckpt, prompts, out, "--shard-index", "0", "--num-shards", "3")
    assert s0["joined"] is None

    # shard 2 is interrupted after its first row (the second one torn mid-write), then run again: it resumes
    shard2 = tmp_path / "pod.jsonl.shard-2-of-3"
    assert _generate(capsys, ckpt, prompts, out, "--shard-index", "2", "--num-shards", "3")["joined"] == str(out)
    assert _lines(out) == whole
    text = shard2.read_text().splitlines(keepends=True)
    shard2.write_text(text[0] + text[1][:20])
    os.remove(host_shard.done_path(str(shard2)))
    out.unlink()
    again = _generate(capsys, ckpt, prompts, out, "--shard-index", "2", "--num-shards", "3")
    assert again["resumed_rows"] == 1 and again["prompts"] == 1 and again["joined"] == str(out)
    assert _lines(out) == whole

    # a shard made with other settings is not resumed into
    assert main(["generate", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--output", str(out), *GEN[:-2], "--seed", "6", "--shard-index", "2", "--num-shards", "3"]) == 2  # fmt: skip
    assert "seed: 5 -> 6" in capsys.readouterr().err


def _eval_cfg(ckpt, data, out, **kw):
    gen = GenerateConfig(num_samples=2, temperature=1.0, max_new_tokens=8, batch_size=4, seed=3)
    return EvalConfig(
        checkpoint=str(ckpt), dataset=str(data), output_dir=str(out), answer_fallback="last_number", generate=gen, **kw
    )


def test_evaluate_shards_join_into_the_one_host_report(ckpt, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text(
        "".join(json.dumps({"question": q, "answer": "3", "id": f"q{i}"}) + "\n" for i, q in enumerate(QUESTIONS))
    )
    one = harness.evaluate(_eval_cfg(ckpt, data, tmp_path / "one"), progress=False)
    assert one.shard is None and one.report["num_problems"] == 5

    root = tmp_path / "pod"
    r0 = harness.evaluate(_eval_cfg(ckpt, data, root, shard_index=0, num_shards=2), progress=False)
    assert r0.shard == (0, 2) and not r0.joined and r0.report["num_problems"] == 3  # problems 0, 2, 4
    assert (tmp_path / "pod.shard-0-of-2" / "samples.jsonl").exists() and not (root / "report.json").exists()
    r1 = harness.evaluate(_eval_cfg(ckpt, data, root, shard_index=1, num_shards=2), progress=False)
    assert r1.joined and r1.report["num_problems"] == 5 and r1.paths["report"].startswith(str(root))
    for key in ("accuracy", "pass@k", "maj@k", "samples", "settings", "skipped"):
        assert r1.report[key] == one.report[key], key
    assert (root / "samples.jsonl").read_text() == (tmp_path / "one" / "samples.jsonl").read_text()
    assert r1.report["run"]["generated_problems"] == 5

    # the joined directory is a finished run: a one-host evaluate there resumes every problem
    again = harness.evaluate(_eval_cfg(ckpt, data, root), progress=False)
    assert again.generated == 0 and again.resumed == 5 and again.report["accuracy"] == one.report["accuracy"]
    # a rerun of a finished shard generates nothing and joins again
    r0b = harness.evaluate(_eval_cfg(ckpt, data, root, shard_index=0, num_shards=2), progress=False)
    assert r0b.generated == 0 and r0b.joined


def test_shard_flags_are_checked(ckpt, tmp_path, capsys):
    prompts = _prompts(tmp_path)
    for flags, message in (
        (["--shard-index", "2", "--num-shards", "2"], "shard_index: 2 is not in [0, 2)"),
        (["--num-shards", "-1"], "num_shards: must be >= 0"),
        (["--tensor", "0"], "generate.generate.tensor must be >= 1 or -1"),
        (["--tensor", "3"], "engine.tensor=3 does not divide the model's 2 kv heads"),
    ):
        args = ["generate", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--output", str(tmp_path / "o")]
        assert main([*args, *flags]) == 2, flags
        assert message in capsys.readouterr().err, flags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_each_generate_their_shard(ckpt, tmp_path, capsys):
    """Two hosts of a 'TPU slice' on localhost (its environment variables; jax.distributed over gloo, 2 devices
    each): the shard and its index come from jax.process_index(), each host's engine uses its own devices, and
    the output equals one host's."""
    prompts = _prompts(tmp_path)
    _generate(capsys, ckpt, prompts, tmp_path / "one.jsonl")
    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            TPU_WORKER_HOSTNAMES="127.0.0.1,127.0.0.1",
            TPU_WORKER_ID=str(i),
            JAX_COORDINATOR_PORT=str(port),
        )
        args = ["--checkpoint", str(ckpt), "--prompts", str(prompts), "--output", str(tmp_path / "pod.jsonl"), *GEN]
        cmd = [sys.executable, "-m", "mathjax_train.cli", "generate", *args, "--tensor", "2"]
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted((o["shard_index"], o["num_shards"], o["prompts"]) for o in outs) == [(0, 2, 4), (1, 2, 3)]
    assert [o["joined"] for o in outs].count(str(tmp_path / "pod.jsonl")) >= 1
    assert _lines(tmp_path / "pod.jsonl") == _lines(tmp_path / "one.jsonl")
