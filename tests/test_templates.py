"""Prompt templates, answer endings, few-shot assembly, and chat templates vs transformers."""

import json

import pytest

from mathjax_train.data import templates as T

GSM_SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"

CHAT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}{{ eos_token }}\n"
    "{% else %}<|system|>\n{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def test_alpaca_rft_prompt_is_the_rft_repo_wording():
    prompt = T.get_template("alpaca_rft").format_prompt("What is 2+3?")
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhat is 2+3?\n\n### Response:"
    )
    assert T.get_template("alpaca_rft").format_example("Q", "A")[1] == "A"  # RFT concatenates directly


def test_question_answer_prompt_and_target():
    t = T.get_template("question_answer")
    assert t.format_example("What is 2+3?", "5") == ("Question: What is 2+3?\nAnswer:", " 5")


def test_unknown_template_lists_valid_names():
    with pytest.raises(T.TemplateError) as e:
        T.get_template("vicuna")
    for name in ("alpaca_rft", "question_answer", "chat"):
        assert name in str(e.value)
    with pytest.raises(T.TemplateError, match="tokenizer_config"):
        T.get_template("chat")


@pytest.mark.parametrize(
    "ending,last_line",
    [("gsm8k", "#### 72"), ("the_answer_is", "The answer is: 72"), ("boxed", "The answer is $\\boxed{72}$.")],
)
def test_format_solution_replaces_the_gsm_ending(ending, last_line):
    out = T.format_solution(GSM_SOLUTION, "72", ending)
    lines = out.split("\n")
    assert lines[-1] == last_line and len(lines) == 3 and "####" not in "\n".join(lines[:-1])
    assert T.format_solution(out, "72", ending) == out  # idempotent
    for other in T.ENDINGS:  # any ending converts to any other
        assert T.format_solution(out, "72", other) == T.format_solution(GSM_SOLUTION, "72", other)


def test_boxed_ending_keeps_an_existing_math_box_and_rejects_unknown_endings():
    math_sol = "So $a+b=-3+3=\\boxed{0}$."
    assert T.format_solution(math_sol, "0", "boxed") == math_sol
    assert T.format_solution(math_sol, "0", "gsm8k") == math_sol + "\n#### 0"
    with pytest.raises(T.TemplateError, match="gsm8k"):
        T.format_solution(math_sol, "0", "latex")


def test_remove_calculator_annotations():
    assert T.remove_calculator_annotations(GSM_SOLUTION).split("\n")[0] == "Natalia sold 48/2 = 24 clips in May."


def test_few_shot_assembly_and_exemplar_choice():
    pool = [{"question": f"q{i}", "solution": f"s{i}"} for i in range(6)]
    shots = T.pick_exemplars(pool, 2)
    assert shots == pool[:2]
    text = T.get_template("question_answer").few_shot(shots, "new")
    assert text == "Question: q0\nAnswer: s0\n\nQuestion: q1\nAnswer: s1\n\nQuestion: new\nAnswer:"
    a, b = T.pick_exemplars(pool, 3, seed=4), T.pick_exemplars(pool, 3, seed=4)
    assert a == b and len({e["question"] for e in a}) == 3
    with pytest.raises(T.TemplateError, match="pool has 6"):
        T.pick_exemplars(pool, 7)


def _write_config(d, **extra):
    cfg = {
        "chat_template": CHAT,
        "bos_token": "<s>",
        "eos_token": {
            "__type": "AddedToken",
            "content": "</s>",
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        },
        "unk_token": "<unk>",
        **extra,
    }
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


def test_chat_template_renders_prompt_target_and_few_shot(tmp_path):
    t = T.get_template("chat", tokenizer_config=_write_config(tmp_path))
    assert t.format_prompt("2+3?") == "<s><|user|>\n2+3?</s>\n<|assistant|>\n"
    assert t.format_example("2+3?", "5") == ("<s><|user|>\n2+3?</s>\n<|assistant|>\n", "5</s>\n")
    shots = t.few_shot([{"question": "1+1?", "solution": "2"}], "2+3?")
    assert shots == "<s><|user|>\n1+1?</s>\n<|assistant|>\n2</s>\n<|user|>\n2+3?</s>\n<|assistant|>\n"
    sys_t = T.get_template("chat", tokenizer_config=tmp_path / "tokenizer_config.json", system="Be brief.")
    assert sys_t.format_prompt("x").startswith("<s><|system|>\nBe brief.</s>\n<|user|>")


def test_chat_template_errors_name_the_file(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    with pytest.raises(T.TemplateError, match="chat_template"):
        T.get_template("chat", tokenizer_config=tmp_path)
    with pytest.raises(T.TemplateError, match="no tokenizer_config.json"):
        T.get_template("chat", tokenizer_config=tmp_path / "nowhere")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ raise_exception('no') }}"}))
    with pytest.raises(Exception, match="no"):
        T.get_template("chat", tokenizer_config=tmp_path).format_prompt("x")


def test_chat_template_matches_transformers_apply_chat_template(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    template = (  # exercises trim_blocks/lstrip_blocks, loop controls, tojson and namespace like real templates
        "{% set ns = namespace(n=0) %}\n"
        "{% for m in messages %}\n"
        "  {% set ns.n = ns.n + 1 %}\n"
        "  {{ bos_token if loop.first else '' }}[{{ ns.n }}] {{ m['role'] | upper }}: {{ m['content'] | tojson }}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    _write_config(tmp_path, chat_template=template, tokenizer_class="PreTrainedTokenizerFast")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = T.get_template("chat", tokenizer_config=tmp_path)
    for question in ["hello", 'Natalia sold 48 clips "in" April; how many?\nTwo lines & <tags>']:
        expected = hf.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        assert ours.format_prompt(question) == expected
    convo = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    assert ours.render(convo, add_generation_prompt=False) == hf.apply_chat_template(convo, tokenize=False)
