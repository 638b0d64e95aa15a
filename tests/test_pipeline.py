"""`pipeline`: configs/pipeline_tiny.yaml runs every stage kind on CPU (SFT -> RFT -> RL -> evaluate ->
export); a run killed mid-stage and re-run ends with the same manifest hashes as an uninterrupted one; a changed stage config re-runs
that stage and the later ones only; changed input or output content is detected; bad files are
named. One killed + one uninterrupted run are shared by the tests (module fixture)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from mathjax_train.cli import main
from mathjax_train.errors import ConfigError
from mathjax_train.pipeline.hashing import checkpoint_hash
from mathjax_train.pipeline.runner import run_pipeline
from mathjax_train.pipeline.spec import KINDS, load_pipeline
from data_fixtures import write_manual_dir
from train_helpers import REPO, cli_env

TINY = REPO / "configs" / "pipeline_tiny.yaml"


def _manifest(run_dir) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _hashes(manifest: dict) -> dict:
    return {name: {k: o["sha256"] for k, o in rec["outputs"].items()} for name, rec in manifest["stages"].items()}


def _run(run_dir, *overrides, **kw):
    return run_pipeline(load_pipeline(str(TINY), [f"run_dir={run_dir}", *overrides]), **kw)


def _cli(run_dir) -> list[str]:
    return [sys.executable, "-m", "mathjax_train.cli", "pipeline", "--config", str(TINY), f"run_dir={run_dir}"]


def _kill_during_sft(run_dir) -> list[int]:
    """Start the command, SIGKILL it once the sft stage has a committed checkpoint; the steps saved then."""
    proc = subprocess.Popen(_cli(run_dir), env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = run_dir / "sft" / "checkpoints"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpts.exists() and _committed(ckpts):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    return _committed(ckpts)


def _committed(ckpts) -> list[int]:
    """Finished steps: Orbax writes STEP.orbax-checkpoint-tmp (success marker included) and renames it."""
    return sorted(int(d.name) for d in ckpts.iterdir() if d.name.isdigit() and (d / "commit_success.txt").exists())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run directory twice: killed mid-sft (a subprocess) then re-run here (kept as
    `killed`), then uninterrupted (a second subprocess; all three share the session's JAX compilation cache, conftest)."""
    root = tmp_path_factory.mktemp("pipeline")
    run_dir = root / "run"
    saved = _kill_during_sft(run_dir)
    at_kill = _manifest(run_dir)
    resumed = _run(run_dir)
    killed = root / "killed"
    run_dir.rename(killed)
    proc = subprocess.run(_cli(run_dir), env=cli_env(), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"run_dir": run_dir, "killed": killed, "saved_at_kill": saved, "at_kill": at_kill, "resumed": resumed}


def test_every_stage_kind_runs_and_the_manifest_traces_them(runs):
    m = _manifest(runs["run_dir"])
    stages = m["stages"]
    assert {r["kind"] for r in stages.values()} == set(KINDS)
    assert all(r["status"] == "done" and r["seconds"] > 0 for r in stages.values())
    assert all(o["sha256"] for r in stages.values() for o in r["outputs"].values())
    code = stages["sft"]["code"]
    assert len(code["source_sha256"]) == 64 and "git_commit" in code and "package_version" in code
    # each stage's inputs are earlier stages' outputs, with the hashes those stages recorded
    out = {o["path"]: o["sha256"] for r in stages.values() for o in r["outputs"].values()}
    assert stages["retrain"]["inputs"]["init_from"]["sha256"] == stages["sft"]["outputs"]["checkpoint"]["sha256"]
    assert stages["retrain"]["inputs"]["data.jsonl[0]"]["sha256"] == stages["select"]["outputs"]["output"]["sha256"]
    for rec in stages.values():
        for inp in rec["inputs"].values():
            assert inp["sha256"] == out[inp["path"]], inp
    assert stages["retrain"]["config"]["init_from"] == str(runs["run_dir"] / "sft")
    # the loop's RL step: GRPO from the retrained model, its checkpoint evaluated and exported
    assert stages["rl"]["inputs"]["init_from"]["sha256"] == stages["retrain"]["outputs"]["checkpoint"]["sha256"]
    assert stages["rl"]["metrics"]["status"] == "finished" and stages["rl"]["metrics"]["steps"] == 2
    assert stages["rl"]["metrics"]["sampled_tokens"] > 0
    assert stages["export"]["inputs"]["checkpoint"]["sha256"] == stages["rl"]["outputs"]["checkpoint"]["sha256"]
    assert stages["sft"]["metrics"]["step"] == 8 and stages["retrain"]["metrics"]["step"] == 2
    assert stages["sample"]["metrics"]["samples"] == 16 and stages["sample"]["metrics"]["processed"] == 4
    aug = stages["augment"]["metrics"]  # 2 seeds, one method: each candidate is kept or dropped for a reason
    assert aug["seeds"] == aug["candidates"] == 2 and aug["kept"] + sum(aug["dropped"].values()) == 2
    aug_in = stages["augment"]["inputs"]  # what it reads is traced: a changed teacher or seed file re-runs it
    assert aug_in["teacher_checkpoint"]["sha256"] == stages["sft"]["outputs"]["checkpoint"]["sha256"]
    assert aug_in["seeds"]["sha256"] == stages["seeds"]["outputs"]["problems"]["sha256"]
    assert aug_in["benchmarks[0]"]["sha256"] == stages["heldout"]["outputs"]["problems"]["sha256"]
    assert stages["decontaminate"]["metrics"]["rows_checked"] == stages["sample"]["metrics"]["output_stats"]["rows"]
    ev = stages["evaluate"]["metrics"]
    assert set(ev) == {"sft", "retrain", "rl"}
    for m_ in ev.values():
        assert m_["greedy"]["problems"] == 4 and set(m_["sampled"]["pass@k"]) >= {"1", "4"}
        assert 0 <= m_["sampled"]["pass@k"]["1"] <= m_["sampled"]["pass@k"]["4"] <= 1
    sc = stages["scaling"]["metrics"]
    assert sc["sizes"] == [2.0, 4.0] and len(sc["accuracy"]) == 2 and "r2" in sc
    assert json.loads((runs["run_dir"] / "scaling" / "fit.json").read_text())["slope"] == sc["slope"]
    assert (runs["run_dir"] / "export" / "hf" / "config.json").exists()
    assert "model.safetensors" in stages["export"]["metrics"]["files"]


def test_killed_run_resumes_to_the_same_hashes(runs):
    saved, at_kill = runs["saved_at_kill"], runs["at_kill"]
    assert saved and max(saved) < 8, saved  # killed mid-training, with a checkpoint to resume from
    assert at_kill["stages"]["sft"]["status"] == "running" and "sample" not in at_kill["stages"]
    assert [runs["resumed"][s]["action"] for s in ("tokenizer", "heldout", "sft", "sample")] == [
        "skip",
        "skip",
        "resume",
        "run",
    ]
    killed = _manifest(runs["killed"])
    assert killed["stages"]["sft"]["resumed"] is True
    assert json.loads((runs["killed"] / "sft" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 8
    fresh = _manifest(runs["run_dir"])
    assert fresh["stages"]["sft"]["resumed"] is False
    assert _hashes(killed) == _hashes(fresh)
    assert {n: r["config_hash"] for n, r in killed["stages"].items()} == {
        n: r["config_hash"] for n, r in fresh["stages"].items()
    }


def test_checkpoint_hash_ignores_orbax_file_layout(runs):
    """Identical params saved twice get different OCDBT file names and bytes, the same hash."""

    def files(d):
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in (d / "checkpoints").rglob("*") if p.is_file()}

    a, b = runs["killed"] / "sft", runs["run_dir"] / "sft"
    assert files(a) != files(b)
    assert checkpoint_hash(a) == checkpoint_hash(b)
    assert checkpoint_hash(runs["run_dir"] / "retrain") != checkpoint_hash(b)  # other params, other hash


def test_rerun_skips_every_done_stage(runs):
    again = _run(runs["run_dir"])
    assert {s["action"] for s in again.values()} == {"skip"}


def test_changed_stage_config_reruns_it_and_later_stages_only(runs):
    run_dir = runs["run_dir"]
    before = _manifest(run_dir)["stages"]
    summary = _run(run_dir, "stages.evaluate.eval.limit=2")
    assert [n for n, s in summary.items() if s["action"] == "run"] == ["evaluate", "export"]
    assert summary["evaluate"]["reason"] == "config changed: eval.limit"
    after = _manifest(run_dir)["stages"]
    for name in set(before) - {"evaluate", "export"}:
        assert after[name] == before[name], name
    assert after["evaluate"]["metrics"]["sft"]["greedy"]["problems"] == 2
    assert after["export"]["started_at"] >= before["export"]["finished_at"]
    assert after["export"]["outputs"] == before["export"]["outputs"]  # same checkpoint, same export bytes


def test_changed_output_file_is_detected(runs):
    run_dir = runs["run_dir"]
    selected = run_dir / "select" / "selected.jsonl"
    selected.write_text(selected.read_text().replace('"answer": "', '"answer": "9', 1))
    plan = _run(run_dir, "stages.evaluate.eval.limit=2", dry_run=True)
    assert plan["select"]["action"] == "run" and "output output" in plan["select"]["reason"]
    assert all(plan[n]["action"] == "skip" for n in ("tokenizer", "heldout", "sft", "sample", "decontaminate"))
    assert all(plan[n]["action"] == "run" for n in ("retrain", "rl", "scaling", "evaluate", "export"))


def test_changed_input_file_reruns_its_stage(tmp_path):
    """An input no stage makes (a user's file) whose content changes re-runs the stage that reads it."""
    user = tmp_path / "user.jsonl"
    user.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    spec = tmp_path / "p.yaml"
    spec.write_text(
        f"run_dir: {tmp_path / 'run'}\nstages:\n"
        "  heldout: {kind: problems, count: 3, levels: [1]}\n"
        f"  clean: {{kind: decontaminate, input: {user}, benchmarks: ['${{stages.heldout.problems}}']}}\n"
    )
    first = run_pipeline(load_pipeline(str(spec)))
    assert [s["action"] for s in first.values()] == ["run", "run"]
    heldout = json.loads((tmp_path / "run" / "heldout" / "problems.jsonl").read_text().splitlines()[0])
    user.write_text(user.read_text() + json.dumps({"question": heldout["question"], "answer": "0"}) + "\n")
    second = run_pipeline(load_pipeline(str(spec)))
    assert second["heldout"]["action"] == "skip"
    assert second["clean"]["action"] == "run" and second["clean"]["reason"] == "input changed: input"
    m = _manifest(tmp_path / "run")["stages"]["clean"]["metrics"]
    assert (m["rows_checked"], m["rows_contaminated"]) == (2, 1)


def test_a_named_benchmark_counts_by_its_file(tmp_path):
    """`benchmarks: [gsm8k]` reads the manual directory's test file: editing it re-runs the stage."""
    manual = write_manual_dir(tmp_path / "manual")
    user = tmp_path / "user.jsonl"
    user.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")
    spec = tmp_path / "p.yaml"
    spec.write_text(
        f"run_dir: {tmp_path / 'run'}\nstages:\n"
        f"  clean: {{kind: decontaminate, input: {user}, benchmarks: [gsm8k], data_dir: {manual}}}\n"
    )
    assert run_pipeline(load_pipeline(str(spec)))["clean"]["action"] == "run"
    m = _manifest(tmp_path / "run")["stages"]["clean"]
    assert m["inputs"]["benchmarks[0]"]["path"] == str(manual / "gsm8k" / "test.jsonl")
    assert m["metrics"]["rows_contaminated"] == 1 and m["metrics"]["by_method"]["exact"] == 1  # a test question
    assert run_pipeline(load_pipeline(str(spec)))["clean"]["action"] == "skip"
    test_file = manual / "gsm8k" / "test.jsonl"
    test_file.write_text(test_file.read_text().replace("2 + 2", "5 + 5"))
    again = run_pipeline(load_pipeline(str(spec)))["clean"]
    assert (again["action"], again["reason"]) == ("run", "input changed: benchmarks[0]")
    assert "exact" not in _manifest(tmp_path / "run")["stages"]["clean"]["metrics"]["by_method"]  # numbers differ now


@pytest.mark.parametrize(
    "stages, message",
    [
        ("  a: {kind: trian}\n", "stages.a.kind: 'trian' is not one of"),
        ("  a: {kind: [train]}\n", r"stages.a.kind: \['train'\] is not one of"),  # unhashable: not a TypeError
        (
            "  a: {kind: select, inputs: ['${stages.b.output}']}\n  b: {kind: select, inputs: [x.jsonl]}\n",
            r"stages.a.inputs\[0\]: \$\{stages.b.output\}: no earlier stage 'b' \(a stage can only use earlier",
        ),
        (
            "  b: {kind: problems}\n  a: {kind: select, inputs: ['${stages.b.output}']}\n",
            r"a problems stage's outputs are problems",
        ),
        ("  a: {kind: train, output_dir: /tmp/x}\n", "stages.a.output_dir: set by the pipeline"),
        ("  a: {kind: rl}\n", "stages.a: init_from: an rl stage starts from a checkpoint"),
        ("  a: {kind: evaluate, checkpoints: [c], eval: {limt: 3}}\n", "stages.a.eval: unknown key 'limt'"),
        ("  a: {kind: train, train: {steps: -1}}\n", "stages.a: train.steps must be >= 0"),
        ("  a: {kind: train, base: missing.yaml}\n", "stages.a: base .*missing.yaml: config file not found"),
    ],
)
def test_bad_pipeline_files_name_the_file_stage_and_field(tmp_path, stages, message):
    spec = tmp_path / "bad.yaml"
    spec.write_text("stages:\n" + stages)
    with pytest.raises(ConfigError, match=message) as e:
        load_pipeline(str(spec))
    assert str(spec) in str(e.value)


def test_overrides_are_checked_and_plan_takes_a_pipeline(tmp_path, capsys):
    with pytest.raises(ConfigError, match="stages.sft: override 'train.stepz=3': unknown key 'stepz'"):
        load_pipeline(str(TINY), ["stages.sft.train.stepz=3"])
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        load_pipeline(str(TINY), ["stages.nope.k=3"])
    assert load_pipeline(str(TINY), ["stages.sample.k=7"]).stage("sample").cfg.k == 7
    with pytest.raises(ConfigError, match="--stop-after 'smpl': no such stage"):
        run_pipeline(load_pipeline(str(TINY), [f"run_dir={tmp_path}"]), stop_after="smpl")
    capsys.readouterr()
    assert main(["plan", "--config", str(REPO / "configs" / "pipeline_llama2_7b_rft_v5p-32.yaml")]) == 0
    out = capsys.readouterr().out
    assert "stage sft" in out and "stage retrain" in out and "176 steps" in out and out.count("FITS") == 2
