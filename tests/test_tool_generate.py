"""Tool-integrated generation on a real (tiny, forced) checkpoint: code the model decodes really runs.

The forced model's script can only reach its final answer if each output block it reads back is
exactly what running the code prints (see forced_model.py), so these tests fail if execution,
session state or the resume-after-output loop is wrong. Extra scripts here: a row whose code sleeps,
a row that decodes a chain of tokens meanwhile, and a row whose output block is many tokens.
"""

import json

import psutil
import pytest

from forced_model import (
    ADDED,
    ANS1,
    ANS2,
    ANS3,
    CODE1,
    CODE2,
    CODE3,
    OUT1,
    OUT2,
    OUT3,
    Q1,
    Q2,
    Q3,
    SCRIPT,
    STOP_TOKEN,
    make_forced_checkpoint,
    write_jsonl,
)
from mathjax_train.cli import main
from mathjax_train.config import EngineConfig
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams
from mathjax_train.infer.tool_generate import ToolGenerator, generate_with_tools, round_seed
from mathjax_train.tools.interpreter import ExecutionResult, Session
from mathjax_train.tools.tir import format_output

Q4, Q5, Q6 = "<|q4|>", "<|q5|>", "<|q6|>"
CODE4 = "```python\nimport time\ntime.sleep(1.0)\nprint('slept')\n```\n"
OUT4 = "```output\nslept\n```\n"
CODE5 = "```python\nprint(6 * 7, 6 + 7)\n```\n"
OUT5 = "```output\n42 13\n```\n"  # not one token: it is tokenized as text and ends in a plain "\n"
WORDS = list("ABCDEFGH")  # single byte-level tokens (the fixture vocabulary has room for few added ones)
EXTRA = {
    Q4: CODE4,
    CODE4: STOP_TOKEN,
    OUT4: ANS1,
    Q5: CODE5,
    CODE5: STOP_TOKEN,
    "\n": ANS2,
    Q6: WORDS[0],
    **{a: b for a, b in zip(WORDS, WORDS[1:])},
    WORDS[-1]: "</s>",
}
# small pages and one-token chunks: page boundaries are crossed and rows end in different chunks
SMALL = EngineConfig(page_size=4, decode_steps=1, prefill_budget=16)


@pytest.fixture(scope="module")
def forced(tmp_path_factory):
    ckpt = make_forced_checkpoint(
        tmp_path_factory.mktemp("forced"), {**SCRIPT, **EXTRA}, ADDED + [Q4, Q5, Q6, CODE4, OUT4, CODE5]
    )
    return ckpt, load_for_inference(ckpt)


def ids_of(model, *texts):
    return [model.tokenizer.encode(t, add_special_tokens=False)[0] for t in texts]


def sandbox_processes():
    """Live sandbox workers below this process (a child that exited unreaped, a zombie, has no command line)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "_sandbox_worker" in " ".join(p.cmdline()):
                found.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass
    return found


def test_code_runs_in_one_session_per_row_and_rows_refill_the_batch(forced):
    _, m = forced
    prompts = ["Compute 6 times 7, plus one. " + Q1, "Say seven. " + Q2, "Use a missing name. " + Q3]
    sp = SamplingParams(max_tokens=12, temperature=0.7)
    gens = generate_with_tools(m, prompts, sp, seeds=[1, 2, 3], max_calls=4, timeout_s=5.0, batch_size=2)

    assert gens[0].text == CODE1 + OUT1 + CODE2 + OUT2 + ANS1
    assert (gens[0].tool_calls, gens[0].finish_reason) == (2, "eos")
    assert gens[0].token_ids == ids_of(m, CODE1, OUT1, CODE2, OUT2, ANS1) + [2]
    assert gens[1].text == ANS2 and (gens[1].tool_calls, gens[1].finish_reason) == (0, "eos")
    assert gens[1].token_ids == ids_of(m, ANS2) + [2]
    # the error of the failing block is fed back as its output, and the model reads it
    assert gens[2].text == CODE3 + OUT3 + ANS3 and (gens[2].tool_calls, gens[2].finish_reason) == (1, "eos")
    assert not sandbox_processes()  # generate_with_tools closed its sandboxes


def test_row_without_calls_matches_plain_sampling(forced):
    _, m = forced
    prompt = "Say seven. " + Q2
    sp = SamplingParams(max_tokens=12, temperature=1.0)
    tool = generate_with_tools(m, [prompt], sp, [5], batch_size=1)[0]
    plain = Engine(m, EngineConfig(num_slots=1)).generate([m.tokenizer.encode(prompt)], sp, [[5]])[0][0]
    assert (tool.text, tool.token_ids, tool.finish_reason) == (plain.text, plain.token_ids, plain.finish_reason)
    assert tool.logprobs == plain.logprobs and tool.tool_calls == 0


def test_max_calls_leaves_the_next_block_unexecuted(forced):
    _, m = forced
    gen = generate_with_tools(m, ["again " + Q1], SamplingParams(max_tokens=12), [0], max_calls=1, batch_size=1)[0]
    assert gen.text == CODE1 + OUT1 + CODE2 and gen.tool_calls == 1 and gen.finish_reason == "max_calls"


def test_length_limit_ends_a_row_without_losing_its_text(forced):
    _, m = forced
    assert m.cfg.max_position_embeddings == 1024
    # round 0: 2 prompt tokens + 1021 fit in 1024 positions; round 1 has 4 context tokens: no room
    sp = SamplingParams(max_tokens=1021)
    gen = generate_with_tools(m, [Q1], sp, [0], batch_size=1)[0]
    assert gen.text == CODE1 + OUT1 and gen.tool_calls == 1 and gen.finish_reason == "length"
    assert gen.token_ids == ids_of(m, CODE1, OUT1)  # the output block that found no room is in them too
    with pytest.raises(ValueError, match="prompt 0 has 2 tokens; with max_tokens=1023"):
        generate_with_tools(m, [Q1], SamplingParams(max_tokens=1023), [0], batch_size=1)


def test_a_row_waiting_for_its_sandbox_keeps_its_pages_while_others_decode(forced, monkeypatch):
    _, m = forced
    sp = SamplingParams(max_tokens=12)
    with ToolGenerator(m, batch_size=2, preload=(), engine_config=SMALL) as tg:
        eng = tg.engine
        tg.generate([Q4, Q6], sp, [0, 0])  # warm-up: compiles every shape and starts the sandboxes
        seqs, seen = [], {}
        submit, run = eng.submit, Session.run
        monkeypatch.setattr(eng, "submit", lambda *a, **k: seqs.extend(rows := submit(*a, **k)) or rows)

        def observed_run(self, code, *a, **k):
            sleeper, other = seqs
            seen["start"] = (sleeper.state, list(sleeper.pages), eng.stats.decode_chunks)
            result = run(self, code, *a, **k)
            seen["end"] = (
                sleeper.state,
                list(sleeper.pages),
                [eng.pool.refs(p) for p in sleeper.pages],
                eng.stats.decode_chunks,
                other.state,
                other.completion,
            )
            return result

        monkeypatch.setattr(Session, "run", observed_run)
        sleeper_gen, other_gen = tg.generate([Q4, Q6], sp, [0, 0])

        state, pages, chunks = seen["start"]
        assert state == "paused" and pages
        end_state, end_pages, refs, end_chunks, other_state, other_completion = seen["end"]
        # while the code slept, its row held the same pages and the engine went on decoding the other row,
        # which finished before the code returned
        assert end_state == "paused" and end_pages == pages and all(n >= 1 for n in refs)
        assert end_chunks > chunks
        assert other_state == "finished" and other_completion.finish_reason == "eos"
        assert sleeper_gen.text == CODE4 + OUT4 + ANS1 and sleeper_gen.tool_calls == 1
        assert other_gen.text == "".join(WORDS) and other_gen.finish_reason == "eos"
        assert eng.pages_held_by_rows() == 0 and not eng.busy
        assert tg.executions == 2
        assert sandbox_processes()  # warm until closed
    assert not sandbox_processes()


def test_tool_output_is_prefilled_into_the_rows_own_pages(forced, monkeypatch):
    _, m = forced
    with ToolGenerator(m, batch_size=1, preload=(), engine_config=SMALL) as tg:
        eng = tg.engine
        prefills, at_extend = [], []
        prefill, extend = eng.programs.prefill, eng.extend
        monkeypatch.setattr(
            eng.programs,
            "prefill",
            lambda params, cache, chunks, **kw: (
                prefills.extend((tokens.tolist(), start, table.tolist()) for tokens, start, table in chunks),
                prefill(params, cache, chunks, **kw),
            )[1],
        )
        monkeypatch.setattr(eng, "extend", lambda row, *a: (at_extend.append(list(row.pages)), extend(row, *a))[1])
        (gen,) = tg.generate([Q5], SamplingParams(max_tokens=12), [0])

    assert format_output(ExecutionResult(True, "42 13\n", None, False)) == OUT5
    appended = m.tokenizer.encode(OUT5, add_special_tokens=False)
    assert len(appended) > 2
    assert gen.text == CODE5 + OUT5 + ANS2 and (gen.tool_calls, gen.finish_reason) == (1, "eos")
    assert gen.token_ids == ids_of(m, CODE5) + appended + ids_of(m, ANS2) + [2]
    # the prompt (but its last token) once, then only the output block (but its last token, which the
    # next decode step feeds) written after the 3 tokens already in the pages: the context is not redone
    prompt_len = len(m.tokenizer.encode(Q5))
    assert eng.stats.prefill_tokens == (prompt_len - 1) + (len(appended) - 1)
    assert eng.stats.prompt_prefills == 2
    tokens, start, table = prefills[-1]
    assert tokens == appended[:-1] and start == prompt_len + 1
    assert table[: len(at_extend[0])] == at_extend[0]  # into the pages the row held when it stopped
    assert eng.pages_held_by_rows() == 0
    n = len(ids_of(m, CODE5))  # logprobs align with token_ids; tool-output ids were not sampled: NaN
    assert len(gen.logprobs) == len(gen.token_ids)
    assert [x != x for x in gen.logprobs] == [False] * n + [True] * len(appended) + [False, False]


def test_rows_wait_for_a_free_sandbox(forced):
    _, m = forced
    with ToolGenerator(m, batch_size=2, sandboxes=1, preload=()) as tg:  # two code rows, one sandbox
        a, b = tg.generate([Q1, Q3], SamplingParams(max_tokens=12), [0, 0])
        assert a.text == CODE1 + OUT1 + CODE2 + OUT2 + ANS1 and b.text == CODE3 + OUT3 + ANS3
        assert tg.executions == 3 and tg.engine.pages_held_by_rows() == 0


def test_an_error_mid_run_frees_every_page_and_the_generator_still_works(forced):
    _, m = forced

    def fail(i, c):
        raise KeyError(f"caller failed on row {i}")

    with ToolGenerator(m, batch_size=2, preload=(), engine_config=SMALL) as tg:
        with pytest.raises(KeyError, match="caller failed on row 1"):  # Q2 ends first; Q4 sleeps or decodes
            tg.generate([Q4, Q2], SamplingParams(max_tokens=12), [0, 0], on_result=fail)
        assert not tg.engine.busy and tg.engine.pages_held_by_rows() == 0
        (again,) = tg.generate([Q1], SamplingParams(max_tokens=12), [0])
        assert again.text == CODE1 + OUT1 + CODE2 + OUT2 + ANS1


def test_generate_cli_with_tools(forced, tmp_path):
    ckpt, m = forced
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q " + Q1, "id": "a"}, {"prompt": "Q " + Q2, "id": "b"}])
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(ckpt),
                "--prompts",
                str(prompts),
                "--output",
                str(out),
                "--max-new-tokens",
                "12",
                "--tools",
                "python",
                "--max-tool-calls",
                "3",
                "--num-samples",
                "2",
                "--temperature",
                "0.5",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["completions"] == [CODE1 + OUT1 + CODE2 + OUT2 + ANS1] * 2
    assert rows[0]["tool_calls"] == [2, 2] and rows[1]["tool_calls"] == [0, 0]
    assert rows[1]["completions"] == [ANS2] * 2 and rows[1]["finish_reasons"] == ["eos", "eos"]
    assert rows[1]["token_ids"] == [ids_of(m, ANS2) + [2]] * 2


def test_round_seeds():
    assert round_seed(7, 0) == 7 and round_seed(7, 1) != round_seed(7, 2)
