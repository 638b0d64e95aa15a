"""Turn a normalised record into SFT text: (prompt, target) with the configured template and ending.

The same template and answer ending are what evaluation prompts with and grades, so a model
trained here answers in the form the graders read.
"""

from __future__ import annotations

from dataclasses import dataclass

from mathjax_train.data.templates import format_solution, get_template, remove_calculator_annotations


@dataclass(frozen=True)
class SftText:
    prompt: str
    target: str
    has_answer: bool  # False: the record's answer was empty, so no ending line was written


class SftFormatter:
    """`formatter(record) -> SftText`; `template` is a data/templates.py name, `ending` an answer ending.
    GSM-style `<<3*4=12>>` calculator annotations are removed unless `calculator` is set."""

    def __init__(self, template: str, ending: str, tokenizer_dir: str | None = None, calculator: bool = False):
        self.template_name, self.ending, self.calculator = template, ending, calculator
        self.template = get_template(template, tokenizer_config=tokenizer_dir if template == "chat" else None)
        format_solution("x", "1", ending)  # an unknown ending fails here, not mid-stream

    def __call__(self, record: dict) -> SftText:
        answer = record["answer"].strip()
        solution = record["solution"] if self.calculator else remove_calculator_annotations(record["solution"])
        # Two MATH train rows box nothing (answer ""); their solution is kept as written and counted.
        solution = format_solution(solution, answer, self.ending) if answer else solution
        prompt, target = self.template.format_example(record["question"], solution)
        return SftText(prompt, target, bool(answer))
