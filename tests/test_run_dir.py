"""data/run_dir.py: the settings check, torn-line repair and appending (object stores through the
rewrite path, which `remote=True` exercises on a local file) that every resumable command uses."""

import json

import pytest

from mathjax_train.config import ConfigError, InputError, is_remote
from mathjax_train.data import run_dir
from mathjax_train.data.jsonl_source import JsonlFormatError
from mathjax_train.eval import results
from mathjax_train.parallel import host_shard
from mathjax_train.synth import rft_output


def test_is_remote():
    assert is_remote("gs://bucket/run") and is_remote("s3://b/x.jsonl")
    assert not is_remote("/tmp/run") and not is_remote("runs/eval") and not is_remote("C:/x")


def test_diff_settings_reads_absent_keys_as_none_and_limits_to_keys():
    assert run_dir.diff_settings({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == {"b": (2, 3), "c": (None, 4)}
    assert run_dir.diff_settings({"a": 1, "old": 9}, {"a": 1}, keys=["a"]) == {}
    assert run_dir.diff_settings({"x": None}, {}) == {}


def test_check_settings_records_then_refuses_other_settings_naming_file_keys_and_values(tmp_path):
    side = tmp_path / "out" / "run.json"
    first = {"temperature": 0.7, "k": 4, "seed": 0}
    run_dir.check_settings(side, first, output="the output directory out", flag="--output-dir", under="settings")
    assert json.loads(side.read_text()) == {"settings": first}
    run_dir.check_settings(side, dict(first), output="out", flag="--output-dir", under="settings")  # same: resumes
    with pytest.raises(run_dir.SettingsMismatchError) as e:
        run_dir.check_settings(
            side,
            {"temperature": 0.9, "k": 8, "seed": 0, "new": True},
            output="out",
            flag="--output-dir",
            under="settings",
        )
    msg = str(e.value)
    assert msg.startswith(f"{side}: out holds results made with other settings")
    assert "(recorded -> now: k: 4 -> 8; new: None -> True; temperature: 0.7 -> 0.9)" in msg
    assert "use another --output-dir, or delete out (and run.json) to start over" in msg
    assert msg.endswith("or rerun with the recorded settings to resume")
    assert isinstance(e.value, ConfigError) and e.value.diff["k"] == (4, 8)
    # only `keys` count: a recorded key this run does not compare is no mismatch
    run_dir.check_settings(
        side,
        {"temperature": 0.7, "k": 4},
        output="out",
        flag="--output-dir",
        under="settings",
        keys=["temperature", "k"],
    )


def test_check_settings_bad_record_names_the_file(tmp_path):
    side = tmp_path / "o.jsonl.settings.json"
    side.write_text('{"k": 4,\n oops}')
    with pytest.raises(InputError, match=r"o.jsonl.settings.json:2: not valid JSON .*use another --output"):
        run_dir.check_settings(side, {"k": 4}, output="o.jsonl", flag="--output")
    side.write_text("[1, 2]")
    with pytest.raises(InputError, match="not a settings record"):
        run_dir.check_settings(side, {"k": 4}, output="o.jsonl", flag="--output")


def test_torn_last_line_is_cut_and_reported(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": "a"}\n\n{"id": "b"}\n{"id": "c", "text": "\xc3')  # cut inside a UTF-8 character
    scan = run_dir.read_jsonl_repairing(path, ["id"])
    assert scan.torn and [r["id"] for r in scan.rows] == ["a", "b"] and scan.lines == [1, 3]
    assert path.read_bytes() == b'{"id": "a"}\n\n{"id": "b"}\n'
    again = run_dir.read_jsonl_repairing(path, ["id"])
    assert not again.torn and again.rows == scan.rows and path.read_bytes() == b'{"id": "a"}\n\n{"id": "b"}\n'


def test_whole_last_line_without_newline_is_kept_and_ended(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    scan = run_dir.read_jsonl_repairing(path)
    assert not scan.torn and [r["id"] for r in scan.rows] == ["a", "b"]
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_missing_file_reads_empty_and_is_not_created(tmp_path):
    scan = run_dir.read_jsonl_repairing(tmp_path / "none.jsonl")
    assert scan.rows == [] and not scan.torn and not (tmp_path / "none.jsonl").exists()


def test_a_bad_line_before_the_last_is_an_error_not_a_repair(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n')
    with pytest.raises(JsonlFormatError, match="rows.jsonl:2: invalid JSON"):
        run_dir.read_jsonl_repairing(path)
    path.write_text('{"id": "a"}\n{"other": 1}\n')
    with pytest.raises(JsonlFormatError, match="rows.jsonl:2: field 'id': missing required field"):
        run_dir.read_jsonl_repairing(path, ["id"])
    assert path.read_text() == '{"id": "a"}\n{"other": 1}\n'  # nothing cut


def test_keep_rows_cuts_back_to_a_prefix(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": 3}\n')
    scan = run_dir.scan_jsonl(path)
    assert scan.ends == [9, 18, 27]
    assert run_dir.keep_rows(scan, 1) and path.read_text() == '{"n": 1}\n'
    assert not run_dir.keep_rows(run_dir.scan_jsonl(path), 1)
    assert run_dir.keep_rows(run_dir.scan_jsonl(path), 0) and path.read_bytes() == b""


def test_local_appender_flushes_every_write(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    path.parent.mkdir()
    path.write_text('{"n": 1}\n')
    with run_dir.JsonlAppender(path) as out:
        assert not out.remote
        out.write_row({"n": 2, "text": "é"})
        assert path.read_text(encoding="utf-8") == '{"n": 1}\n{"n": 2, "text": "é"}\n'  # before close
        out.write('{"n": 3}\n{"n": 4}\n')
    assert [r["n"] for r in run_dir.scan_jsonl(path).rows] == [1, 2, 3, 4]


def test_object_store_appender_rewrites_the_whole_file(tmp_path):
    path = tmp_path / "remote.jsonl"
    path.write_text("a\n")
    with run_dir.JsonlAppender(str(path), remote=True, flush_every_s=3600) as out:
        out.write("b\n")
        assert path.read_text() == "a\n"  # held back until the interval passes or the appender closes
        out.flush()
        assert path.read_text() == "a\nb\n"
        out.write("c\n")
    assert path.read_text() == "a\nb\nc\n"
    with run_dir.JsonlAppender(path, remote=True, flush_every_s=0) as out:
        out.write("d\n")
        assert path.read_text() == "a\nb\nc\nd\n"  # 0: every write reaches the store


def _rft_row(qid, index, path_index, total):
    return json.dumps({"question_id": qid, "question_index": index, "path_index": path_index, "paths_total": total})


def test_rft_output_cuts_an_unfinished_question(tmp_path):
    path = tmp_path / "rft.jsonl"
    done = _rft_row("q0", 0, 0, 2) + "\n" + _rft_row("q0", 0, 1, 2) + "\n"
    path.write_text(done + _rft_row("q1", 1, 0, 3) + "\n" + _rft_row("q1", 1, 1, 3) + "\n")
    rows, cut = rft_output.read_rows(path)
    assert cut and [r["path_index"] for r in rows] == [0, 1]
    assert [r["question_id"] for r in rft_output.repair(path)] == ["q0", "q0"] and path.read_text() == done
    assert rft_output.read_rows(path)[1] is False
    path.write_text(done + '{"question_id": "q1"')  # a torn line
    assert len(rft_output.repair(path)) == 2 and path.read_text() == done
    path.write_text('{"id": 1}\n')
    with pytest.raises(JsonlFormatError, match=r"rft.jsonl:1: field 'question_id': .*is this an rft output file"):
        rft_output.read_rows(path)


def test_merge_refuses_shards_made_with_other_settings(tmp_path):
    out = str(tmp_path / "rft.jsonl")
    for i, temperature in ((0, 0.7), (1, 0.9)):
        shard = host_shard.shard_path(out, i, 2)
        (tmp_path / f"rft.jsonl.shard-{i}-of-2").write_text(_rft_row(f"q{i}", i, 0, 1) + "\n")
        (tmp_path / f"rft.jsonl.shard-{i}-of-2.done").write_text("{}")
        run_dir.check_settings(
            host_shard.settings_path(shard),
            {"temperature": temperature, "shard_index": i},
            output=shard,
            flag="--output",
        )
    with pytest.raises(
        run_dir.SettingsMismatchError,
        match=r"shard-1-of-2.settings.json: .*\(shard 0 -> this shard: temperature: 0.7 -> 0.9\)",
    ):
        rft_output.merge_shards(out, 2)


def _eval_row(i: str) -> dict:
    return {
        "id": i,
        "index": 0,
        "prompt_sha1": "x",
        "completions": ["4"],
        "answers": ["4"],
        "correct": [True],
        "clusters": [[0]],
    }


def test_evaluate_rows_resume_repairs_but_a_reader_of_results_changes_nothing(tmp_path):
    """`read_rows` (a resumed evaluate run) cuts a torn last line; `finished_rows` (the demo's summary, a reader)
    leaves the file as it is and refuses it, since that run did not finish; a repeated id is an error for both."""
    path = tmp_path / results.SAMPLES_FILE
    whole = "".join(json.dumps(_eval_row(i)) + "\n" for i in ("a", "b"))
    path.write_text(whole)
    assert list(results.finished_rows(path)) == ["a", "b"] and path.read_text() == whole
    path.write_text(whole + '{"id": "c", "ind')
    with pytest.raises(JsonlFormatError, match=r"samples.jsonl:3: cut off mid-write"):
        results.finished_rows(path)
    assert path.read_text().endswith('"ind')
    resumed = results.read_rows(tmp_path)
    assert list(resumed.rows) == ["a", "b"] and resumed.partial_lines == 1 and path.read_text() == whole
    path.write_text(whole + json.dumps(_eval_row("a")) + "\n")
    for read in (lambda: results.finished_rows(path), lambda: results.read_rows(tmp_path)):
        with pytest.raises(JsonlFormatError, match=r"samples.jsonl:3: field 'id': duplicate row for problem 'a'"):
            read()
