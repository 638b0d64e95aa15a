"""Tool-integrated generation on a real (tiny, forced) checkpoint: code the model decodes really runs.

The forced model's script can only reach its final answer if each output block it reads back is
exactly what running the code prints (see forced_model.py), so these tests fail if execution,
session state or the resume-after-output loop is wrong.
"""
import json

import pytest

from forced_model import (ADDED, ANS1, ANS2, ANS3, CODE1, CODE2, CODE3, OUT1, OUT2, OUT3, Q1, Q2, Q3, SCRIPT, make_forced_checkpoint, write_jsonl)
from mathjax_train.cli import main
from mathjax_train.infer.generate import SamplingParams
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.tool_generate import (bucket_length, generate_with_tools, round_seed,
                                               shared_generator)



@pytest.fixture(scope="module")
def forced(tmp_path_factory):
    ckpt = make_forced_checkpoint(tmp_path_factory.mktemp("forced"), SCRIPT, ADDED)
    return ckpt, load_for_inference(ckpt)


def ids_of(model, *texts):
    return [model.tokenizer.encode(t, add_special_tokens=False)[0] for t in texts]


def test_code_runs_in_one_session_per_row_and_rows_refill_the_batch(forced):
    _, m = forced
    prompts = ["Compute 6 times 7, plus one. " + Q1, "Say seven. " + Q2, "Use a missing name. " + Q3]
    sp = SamplingParams(max_new_tokens=12, temperature=0.7, chunk_size=4)
    gens = generate_with_tools(m, prompts, sp, seeds=[1, 2, 3], max_calls=4, timeout_s=5.0, batch_size=2)

    assert gens[0].text == CODE1 + OUT1 + CODE2 + OUT2 + ANS1
    assert (gens[0].calls, gens[0].finish_reason) == (2, "eos")
    assert gens[0].token_ids == ids_of(m, CODE1, OUT1, CODE2, OUT2, ANS1) + [2]
    assert gens[1].text == ANS2 and (gens[1].calls, gens[1].finish_reason) == (0, "eos")
    assert gens[1].token_ids == ids_of(m, ANS2) + [2]
    # the error of the failing block is fed back as its output, and the model reads it
    assert gens[2].text == CODE3 + OUT3 + ANS3 and (gens[2].calls, gens[2].finish_reason) == (1, "eos")


def test_row_without_calls_matches_plain_sampling(forced):
    _, m = forced
    prompt = "Say seven. " + Q2
    sp = SamplingParams(max_new_tokens=12, temperature=1.0)
    tool = generate_with_tools(m, [prompt], sp, [5], batch_size=1)[0]
    plain = shared_generator(m, [2]).generate([m.tokenizer.encode(prompt)], sp, [5], prompt_len=32,
                                              decode_text=m.tokenizer.decode)[0]
    assert (tool.text, tool.token_ids, tool.finish_reason) == (plain.text, plain.token_ids, plain.finish_reason)


def test_max_calls_leaves_the_next_block_unexecuted(forced):
    _, m = forced
    gen = generate_with_tools(m, ["again " + Q1], SamplingParams(max_new_tokens=12), [0], max_calls=1,
                              batch_size=1)[0]
    assert gen.text == CODE1 + OUT1 + CODE2 and gen.calls == 1 and gen.finish_reason == "max_calls"


def test_length_limit_ends_a_row_without_losing_its_text(forced):
    _, m = forced
    assert m.cfg.max_position_embeddings == 1024
    # round 0: 2 prompt tokens + 1021 fit in 1024 positions; round 1 has 4 context tokens: no room
    sp = SamplingParams(max_new_tokens=1021)
    gen = generate_with_tools(m, [Q1], sp, [0], batch_size=1)[0]
    assert gen.text == CODE1 + OUT1 and gen.calls == 1 and gen.finish_reason == "length"
    with pytest.raises(ValueError, match="prompt 0 has"):
        generate_with_tools(m, [Q1], SamplingParams(max_new_tokens=1023), [0], batch_size=1)


def test_generate_cli_with_tools(forced, tmp_path):
    ckpt, m = forced
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q " + Q1, "id": "a"}, {"prompt": "Q " + Q2, "id": "b"}])
    out = tmp_path / "out.jsonl"
    assert main(["generate", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--output", str(out),
                 "--max-new-tokens", "12", "--tools", "python", "--max-tool-calls", "3", "--num-samples", "2",
                 "--temperature", "0.5", "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[0]["completions"] == [CODE1 + OUT1 + CODE2 + OUT2 + ANS1] * 2
    assert rows[0]["tool_calls"] == [2, 2] and rows[1]["tool_calls"] == [0, 0]
    assert rows[1]["completions"] == [ANS2] * 2 and rows[1]["finish_reasons"] == ["eos", "eos"]
    assert rows[1]["token_ids"] == [ids_of(m, ANS2) + [2]] * 2


def test_helpers():
    assert [bucket_length(n) for n in (1, 32, 33, 100, 1000)] == [32, 32, 64, 128, 1024]
    assert round_seed(7, 0) == 7 and round_seed(7, 1) != round_seed(7, 2)
