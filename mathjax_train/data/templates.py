"""Named prompt templates and answer endings, shared by training (SFT targets) and evaluation.

Templates: ``alpaca_rft`` (the Alpaca no-input prompt used by the RFT paper, OFA-Sys/gsm8k-ScRel),
``question_answer`` (``Question: ...\\nAnswer:``) and ``chat`` (the model's own ``chat_template``
from tokenizer_config.json, rendered with jinja2 the way Hugging Face does). Endings put the final
answer in one of the forms the graders read: ``#### x``, ``The answer is: x``, ``\\boxed{x}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from datetime import datetime
from typing import Any, Mapping, Sequence, TypeVar

from etils import epath

from mathjax_train.errors import TemplateError

ALPACA_RFT_PROMPT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{question}\n\n### Response:"
)
QUESTION_ANSWER_PROMPT = "Question: {question}\nAnswer:"

ENDINGS = ("gsm8k", "the_answer_is", "boxed")
_CALC = re.compile(r"<<[^<>]*>>")
# A trailing final-answer line in any of our ending forms (so re-formatting is idempotent).
_TRAILING_ANSWER = re.compile(
    r"\n?[ \t]*(?:####[^\n]*|The answer is:[^\n]*|The answer is \$\\boxed\{.*\}\$\.?)[ \t]*\Z"
)


def strip_final_answer(solution: str) -> str:
    """Remove a trailing ``#### x`` (GSM8K) or ``The answer is...`` line from a solution."""
    return _TRAILING_ANSWER.sub("", solution.rstrip()).rstrip()


def remove_calculator_annotations(text: str) -> str:
    """``3*4 = <<3*4=12>>12`` -> ``3*4 = 12`` (GSM8K calculator markup removed)."""
    return _CALC.sub("", text)


def format_solution(solution: str, answer: str, ending: str = "gsm8k") -> str:
    """The solution text with its final answer written in ``ending`` form.

    Any existing trailing answer line is removed first. For ``boxed``, a solution that already
    contains ``\\boxed{answer}`` (as MATH solutions do) is returned without a second box.
    """
    if ending not in ENDINGS:
        raise TemplateError(f"unknown answer ending {ending!r}; valid: {list(ENDINGS)}")
    body = strip_final_answer(solution)
    sep = "\n" if body else ""
    if ending == "gsm8k":
        return f"{body}{sep}#### {answer}"
    if ending == "the_answer_is":
        return f"{body}{sep}The answer is: {answer}"
    if f"\\boxed{{{answer}}}" in body:
        return body
    return f"{body}{sep}The answer is $\\boxed{{{answer}}}$."


_T = TypeVar("_T")


def pick_exemplars(pool: Sequence[_T], k: int, seed: int | None = None) -> list[_T]:
    """``k`` exemplars from ``pool``: the first k, or a seeded random sample when ``seed`` is set."""
    if k < 0 or k > len(pool):
        raise TemplateError(f"asked for {k} exemplars but the pool has {len(pool)}")
    if seed is None:
        return list(pool[:k])
    return random.Random(seed).sample(list(pool), k)


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    """A plain-text prompt: ``prompt`` has a ``{question}`` slot; ``separator`` goes between the
    prompt and the completion in training text (the RFT repo concatenates with nothing)."""

    name: str
    prompt: str
    separator: str = ""
    shot_separator: str = "\n\n"

    def format_prompt(self, question: str) -> str:
        return self.prompt.format(question=question)

    def format_example(self, question: str, solution: str) -> tuple[str, str]:
        """(prompt, target) for SFT; the loss covers only the target."""
        return self.format_prompt(question), self.separator + solution

    def few_shot(self, exemplars: Sequence[Mapping[str, str]], question: str) -> str:
        """Exemplars (dicts with question, solution) as solved examples, then the new prompt."""
        shots = ["".join(self.format_example(e["question"], e["solution"])) for e in exemplars]
        return self.shot_separator.join(shots + [self.format_prompt(question)])


def _token_text(value: Any) -> str | None:
    """tokenizer_config stores special tokens as strings or AddedToken dicts ({"content": ...})."""
    if isinstance(value, dict):
        return value.get("content")
    return value


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """The model's own chat template, rendered like ``tokenizer.apply_chat_template(tokenize=False)``."""

    name: str
    template: str
    special_tokens: Mapping[str, str]
    system: str | None = None

    @classmethod
    def from_tokenizer_config(cls, path: str | os.PathLike, system: str | None = None) -> "ChatTemplate":
        """Read ``chat_template`` (and special tokens) from tokenizer_config.json or its directory."""
        p = epath.Path(path)
        if p.is_dir():
            p = p / "tokenizer_config.json"
        try:
            config = json.loads(p.read_text())
        except FileNotFoundError:
            raise TemplateError(f"{p}: no tokenizer_config.json (needed for the 'chat' template)") from None
        except json.JSONDecodeError as e:
            raise TemplateError(f"{p}:{e.lineno}: invalid JSON: {e.msg}") from None
        jinja = p.parent / "chat_template.jinja"  # where transformers 5 saves it
        if "chat_template" not in config and jinja.exists():
            config["chat_template"] = jinja.read_text()
        found = cls.from_config(config, system=system)
        if found is None:
            raise TemplateError(
                f"{p}: field 'chat_template' is missing or not a string (and there is no {jinja.name} beside it)"
            )
        return found

    @classmethod
    def from_config(cls, config: Mapping[str, Any], system: str | None = None) -> "ChatTemplate | None":
        """From a loaded tokenizer_config dict; None when it has no usable chat template."""
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if not isinstance(template, str) or not template.strip():
            return None
        tokens = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            text = _token_text(config.get(key))
            if text is not None:
                tokens[key] = text
        return cls(name="chat", template=template, special_tokens=tokens, system=system)

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        env = _jinja_env()
        compiled = env.from_string(self.template)
        return compiled.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )

    def _messages(self, question: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": "user", "content": question}]

    def format_prompt(self, question: str) -> str:
        return self.render(self._messages(question), add_generation_prompt=True)

    def format_example(self, question: str, solution: str) -> tuple[str, str]:
        """(prompt, target): target is what the template adds for the assistant turn (incl. end tokens)."""
        prompt = self.format_prompt(question)
        full = self.render(
            self._messages(question) + [{"role": "assistant", "content": solution}], add_generation_prompt=False
        )
        if not full.startswith(prompt):
            raise TemplateError(
                "chat_template renders the conversation with the assistant reply differently from the "
                "prompt with add_generation_prompt=True, so the target cannot be split off"
            )
        return prompt, full[len(prompt) :]

    def few_shot(self, exemplars: Sequence[Mapping[str, str]], question: str) -> str:
        """Exemplars as earlier user/assistant turns, then the new question."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for e in exemplars:
            msgs += [{"role": "user", "content": e["question"]}, {"role": "assistant", "content": e["solution"]}]
        msgs.append({"role": "user", "content": question})
        return self.render(msgs, add_generation_prompt=True)


def _jinja_env():
    """A sandboxed jinja2 environment configured like transformers' chat-template renderer."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


_PLAIN = {
    "alpaca_rft": PromptTemplate("alpaca_rft", ALPACA_RFT_PROMPT, separator=""),
    "question_answer": PromptTemplate("question_answer", QUESTION_ANSWER_PROMPT, separator=" "),
}
TEMPLATE_NAMES = tuple(sorted(_PLAIN)) + ("chat",)


def get_template(name: str, *, tokenizer_config: str | os.PathLike | None = None, system: str | None = None):
    """Template by name; ``chat`` needs ``tokenizer_config`` (a tokenizer_config.json or its dir)."""
    if name in _PLAIN:
        return _PLAIN[name]
    if name == "chat":
        if tokenizer_config is None:
            raise TemplateError("template 'chat' needs tokenizer_config= (path to tokenizer_config.json or its dir)")
        return ChatTemplate.from_tokenizer_config(tokenizer_config, system=system)
    raise TemplateError(f"unknown prompt template {name!r}; valid: {list(TEMPLATE_NAMES)}")
