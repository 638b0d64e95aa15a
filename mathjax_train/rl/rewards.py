"""Verifiable rewards: 1 when the extracted answer is equivalent to the gold (the grader), plus an
optional format reward for having an answer at all and an overlong penalty for cut completions."""

from __future__ import annotations

from dataclasses import dataclass

from mathjax_train.config import RlConfig
from mathjax_train.grading import extract_answer, is_equivalent
from mathjax_train.infer.params import Completion


@dataclass(frozen=True)
class Score:
    reward: float
    correct: bool
    has_answer: bool
    truncated: bool  # the completion hit max_new_tokens


def score(gold, completion: Completion, rl: RlConfig) -> Score:
    fallback = None if rl.answer_fallback == "none" else rl.answer_fallback
    pred = extract_answer(completion.text, fallback=fallback)
    correct = pred is not None and is_equivalent(gold, pred, timeout_s=rl.grading_timeout_s)
    truncated = completion.finish_reason == "length"
    reward = float(correct) + (rl.format_reward if pred is not None else 0.0)
    if truncated and rl.overlong == "penalty":
        reward -= rl.overlong_penalty
    return Score(reward, correct, pred is not None, truncated)
