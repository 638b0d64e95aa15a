"""Teacher augmentation (Xwin-Math / Skywork-Math style): new questions from seed problems,
answers by self-consistency, difficulty labels, provenance on every row.

For each seed and method the teacher writes one new question; the teacher then solves it `n`
times; answers are extracted and clustered with the grader's equivalence, and the question is
kept only when the largest cluster holds at least `min_agreement` of the n samples (and is not
tied). Every candidate that is not kept is counted under one drop reason. Kept rows pass through
decontamination against the GSM8K and MATH test sets before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
import typing
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from etils import epath

from mathjax_train.config import AugmentJobConfig, AugmentMethod, InputError, is_remote
from mathjax_train.data import problems
from mathjax_train.data.problems import Problem
from mathjax_train.grading import extract_answer, is_equivalent
from mathjax_train.synth import decontaminate as deco_mod
from mathjax_train.synth.teacher import CheckpointTeacher, HttpTeacher, Sampling, Teacher

_NEW_PROBLEM_LINE = "New problem:"
METHOD_PROMPTS = {
    "rephrase": (
        "Here is a math word problem.\n\nProblem:\n{question}\n\n"
        "Restate this problem in your own words. Keep every quantity, every condition and the quantity "
        "asked for unchanged, so that the answer stays exactly the same. Do not solve it.\n"
        f'Write the restated problem after a line that says "{_NEW_PROBLEM_LINE}".\n{_NEW_PROBLEM_LINE}'
    ),
    "change_numbers": (
        "Here is a math word problem.\n\nProblem:\n{question}\n\n"
        "Write a new problem with the same setting and the same kind of reasoning, but with different "
        "numbers (you may also change one condition). Choose the numbers so that the new problem has "
        "exactly one answer and every intermediate quantity makes sense. Do not solve it.\n"
        f'Write the new problem after a line that says "{_NEW_PROBLEM_LINE}".\n{_NEW_PROBLEM_LINE}'
    ),
    "harder": (
        "Here is a math problem.\n\nProblem:\n{question}\n\n"
        "Write a harder problem built on it: add a step, a constraint or a twist that needs more "
        "reasoning, while keeping a single well-defined final answer. The new problem must be "
        "self-contained. Do not solve it.\n"
        f'Write the new problem after a line that says "{_NEW_PROBLEM_LINE}".\n{_NEW_PROBLEM_LINE}'
    ),
}
METHODS: tuple[str, ...] = typing.get_args(AugmentMethod)  # METHOD_PROMPTS has one prompt for each
SOLVE_PROMPT = (
    "Solve the following math problem. Reason step by step and end with the final answer written "
    "as \\boxed{{answer}}.\n\nProblem:\n{question}\n\nSolution:"
)
DROP_REASONS = (
    "no_question",
    "question_too_long",
    "same_as_seed",
    "duplicate_question",
    "no_answer",
    "tie",
    "low_agreement",
    "answer_differs_from_seed",
    "contaminated",
)
# After the new problem, teachers often go on; these lines end the question.
_QUESTION_END = re.compile(r"(?:\A|\n)\s*(?:#+\s*)?(?:\*\*)?(?:Solution|Answer|Final answer|Step 1)\b", re.IGNORECASE)


def _question_sampling(job: AugmentJobConfig) -> Sampling:
    return Sampling(job.question_temperature, job.top_p, job.question_max_tokens, job.seed)


def _solution_sampling(job: AugmentJobConfig) -> Sampling:
    return Sampling(job.temperature, job.top_p, job.max_tokens, job.seed + 1)


def _answer_fallback(job: AugmentJobConfig) -> str | None:
    return "last_number" if job.last_number_fallback else None


_JOB = AugmentJobConfig()  # the `augment` command's defaults, which are this module's too


@dataclass
class AugmentConfig:
    """Settings of one augmentation run (all recorded in the report); `from_job` builds it from the
    command's config, whose defaults are these."""

    methods: tuple[str, ...] = tuple(_JOB.methods)
    n: int = _JOB.n  # solutions sampled per new question
    min_agreement: float = _JOB.min_agreement  # share of the n samples the majority answer needs
    question_sampling: Sampling = _question_sampling(_JOB)
    solution_sampling: Sampling = _solution_sampling(_JOB)
    max_question_chars: int = 3000
    answer_fallback: str | None = _answer_fallback(_JOB)  # "last_number": accept an unmarked final number
    benchmarks: tuple[str, ...] = tuple(_JOB.benchmarks)
    ngram: int = _JOB.ngram
    chunk_seeds: int = 64  # seeds per teacher round trip (bounds memory; progress is printed per chunk)

    @classmethod
    def from_job(cls, job: AugmentJobConfig) -> AugmentConfig:
        return cls(
            methods=tuple(job.methods),
            n=job.n,
            min_agreement=job.min_agreement,
            question_sampling=_question_sampling(job),
            solution_sampling=_solution_sampling(job),
            answer_fallback=_answer_fallback(job),
            benchmarks=tuple(job.benchmarks),
            ngram=job.ngram,
        )

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHOD_PROMPTS]
        if unknown or not self.methods:
            raise InputError(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
        if self.n < 1:
            raise InputError(f"--n must be >= 1, got {self.n}")
        if not 0 < self.min_agreement <= 1:
            raise InputError(f"--min-agreement must be in (0, 1], got {self.min_agreement}")
        if self.answer_fallback not in (None, "last_number"):
            raise InputError(f"answer fallback must be None or 'last_number', not {self.answer_fallback!r}")


# ---- seeds ----------------------------------------------------------------------------------


def load_seeds(spec: str, data_dir=None, limit: int = 0) -> list[Problem]:
    """Seeds from `gsm8k` / `math` (their *train* splits, never test) or a JSONL file with
    `question` (or `problem`), optional `answer`, `source` (default: the file name) and `id` (see
    data/problems.py). A seed's answer is None when unknown (MATH's empty boxes included)."""
    if spec in ("gsm8k", "math"):
        seeds = problems.load_named(spec, "train", data_dir)
    else:
        if not os.path.exists(spec) and not is_remote(spec):
            raise FileNotFoundError(f"--seeds {spec!r} is neither gsm8k, math nor an existing JSONL file")
        seeds = problems.read_jsonl(spec, require_answer=False)
    name = os.path.basename(spec)
    seeds = [
        dataclasses.replace(s, answer=s.answer if s.answer not in ("", None) else None, source=s.source or name)
        for s in seeds
    ]
    return seeds[:limit] if limit > 0 else seeds


# ---- parsing and voting -------------------------------------------------------------------------


def parse_question(text: str) -> str:
    """The new problem in a teacher reply: the text after the last "New problem:" line (if the
    teacher repeated it), cut before any solution it went on to write; "" when nothing is left."""
    if _NEW_PROBLEM_LINE.lower() in text.lower():
        text = text[text.lower().rfind(_NEW_PROBLEM_LINE.lower()) + len(_NEW_PROBLEM_LINE) :]
    m = _QUESTION_END.search(text)
    if m:
        text = text[: m.start()]
    return text.strip().strip("*").strip()


@dataclass
class Vote:
    """Self-consistency over n completions: answer clusters by grader equivalence."""

    answers: list[str | None]  # extracted answer per completion (None: none found)
    clusters: list[list[int]]  # completion indices per cluster, largest first
    total: int

    @property
    def top(self) -> list[int]:
        return self.clusters[0] if self.clusters else []

    @property
    def answer(self) -> str | None:
        return self.answers[self.top[0]] if self.top else None

    @property
    def share(self) -> float:
        return len(self.top) / self.total if self.total else 0.0

    @property
    def tie(self) -> bool:
        return len(self.clusters) > 1 and len(self.clusters[0]) == len(self.clusters[1])


def majority_vote(completions: Sequence[str], fallback: str | None = None) -> Vote:
    """Cluster the extracted answers; each answer joins the first cluster it is equivalent to."""
    answers = [extract_answer(c, fallback=fallback) for c in completions]
    clusters: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for cl in clusters:
            if is_equivalent(answers[cl[0]], a):
                cl.append(i)
                break
        else:
            clusters.append([i])
    clusters.sort(key=lambda c: (-len(c), c[0]))  # stable: among equals, the earliest first
    return Vote(answers, clusters, len(completions))


def difficulty(share: float, method: str) -> str:
    """easy / medium / hard from the teacher's agreement (less agreement: harder), one step
    harder for the `harder` method."""
    levels = ("easy", "medium", "hard")
    level = 0 if share >= 0.9 else 1 if share >= 0.7 else 2
    if method == "harder":
        level = min(level + 1, 2)
    return levels[level]


# Difficulty labels as MATH-style levels, so `data.min_level` selects a hard subset for stage 2.
DIFFICULTY_LEVELS = {"easy": 1, "medium": 3, "hard": 5}


def _norm(text: str) -> str:
    return " ".join(deco_mod.words(text))


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class AugmentReport:
    seeds: int = 0
    candidates: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    kept_by_method: Counter = field(default_factory=Counter)
    difficulty: Counter = field(default_factory=Counter)
    teacher_calls: int = 0
    seconds: float = 0.0
    contamination: dict | None = None

    def as_dict(self, cfg: AugmentConfig, teacher: Teacher) -> dict:
        return {
            "seeds": self.seeds,
            "candidates": self.candidates,
            "kept": self.kept,
            "dropped": {r: self.dropped.get(r, 0) for r in DROP_REASONS},
            "kept_by_method": dict(self.kept_by_method),
            "difficulty": dict(self.difficulty),
            "teacher": teacher.describe(),
            "teacher_calls": self.teacher_calls,
            "seconds": round(self.seconds, 2),
            "settings": {
                **dataclasses.asdict(cfg),
                "question_sampling": cfg.question_sampling.as_dict(),
                "solution_sampling": cfg.solution_sampling.as_dict(),
            },
            "contamination": self.contamination,
        }


def _candidates(
    seeds: Sequence[Problem], cfg: AugmentConfig, teacher: Teacher, report: AugmentReport, seen: set[str]
) -> list[tuple[Problem, str, str]]:
    """(seed, method, new question) for every generated question that survives the checks."""
    pairs = [(s, m) for s in seeds for m in cfg.methods]
    replies = teacher.ask([METHOD_PROMPTS[m].format(question=s.question) for s, m in pairs], 1, cfg.question_sampling)
    report.teacher_calls += len(pairs)
    report.candidates += len(pairs)
    out = []
    for (seed, method), reply in zip(pairs, replies):
        q = parse_question(reply[0])
        key = _norm(q)
        reason = (
            "no_question"
            if not key
            else "question_too_long"
            if len(q) > cfg.max_question_chars
            else "same_as_seed"
            if key == _norm(seed.question)
            else "duplicate_question"
            if key in seen
            else None
        )
        if reason:
            report.dropped[reason] += 1
            continue
        seen.add(key)
        out.append((seed, method, q))
    return out


def _solve(cands, cfg: AugmentConfig, teacher: Teacher, report: AugmentReport) -> list[dict]:
    if not cands:
        return []
    solutions = teacher.ask([SOLVE_PROMPT.format(question=q) for _, _, q in cands], cfg.n, cfg.solution_sampling)
    report.teacher_calls += len(cands)
    rows = []
    for (seed, method, q), completions in zip(cands, solutions):
        vote = majority_vote(completions, cfg.answer_fallback)
        reason = (
            "no_answer"
            if not vote.clusters
            else "tie"
            if vote.tie
            else "low_agreement"
            if vote.share < cfg.min_agreement
            else None
        )
        if (
            reason is None
            and method == "rephrase"
            and seed.answer is not None
            and not is_equivalent(seed.answer, vote.answer)
        ):
            reason = "answer_differs_from_seed"  # a faithful rephrasing keeps the seed's answer
        if reason:
            report.dropped[reason] += 1
            continue
        label = difficulty(vote.share, method)
        rows.append(
            {
                "question": q,
                "solution": completions[vote.top[0]],
                "answer": vote.answer,
                "source": f"augment/{method}",
                "id": f"{seed.id}#{method}",
                "seed_id": seed.id,
                "seed_source": seed.source,
                "method": method,
                "teacher": teacher.describe(),
                "question_sampling": cfg.question_sampling.as_dict(),
                "solution_sampling": {**cfg.solution_sampling.as_dict(), "n": cfg.n},
                "agreement": round(vote.share, 4),
                "votes": len(vote.top),
                "samples": vote.total,
                "difficulty": label,
                "level": DIFFICULTY_LEVELS[label],
            }
        )
    return rows


def run_augment_job(job: AugmentJobConfig, log=sys.stderr) -> AugmentReport:
    """The `augment` command: seeds and teacher as `job` says, then `augment`; settings are checked
    before any seed is read or teacher loaded."""
    cfg = AugmentConfig.from_job(job)
    cfg.validate()
    seeds = load_seeds(job.seeds, job.data_dir or None, job.max_seeds)
    teacher: Teacher
    if job.teacher_checkpoint:
        teacher = CheckpointTeacher(
            job.teacher_checkpoint, dtype=job.dtype, batch_size=job.batch_size, prompt_format=job.prompt_format
        )
    else:
        teacher = HttpTeacher(
            job.teacher_url,
            job.teacher_model,
            api_key_env=job.api_key_env,
            api=job.teacher_api,
            concurrency=job.concurrency,
        )
    return augment(
        seeds, teacher, cfg, job.output, data_dir=job.data_dir or None, report_path=job.report or None, log=log
    )


def augment(
    seeds: Sequence[Problem],
    teacher: Teacher,
    cfg: AugmentConfig,
    output_path,
    *,
    data_dir=None,
    report_path=None,
    log=sys.stderr,
) -> AugmentReport:
    """Run the pipeline and write the kept, decontaminated rows to `output_path` (JSONL).

    The file appears only when the run completes (rows go to `<output>.partial` first); the
    report (counts per drop reason, contaminated rows by test id, settings) goes to
    `report_path` (default `<output>.report.json`).
    """
    cfg.validate()
    start = time.time()
    deco = deco_mod.Decontaminator.from_data_dir(data_dir, cfg.benchmarks, cfg.ngram)
    contamination = deco_mod.new_report(deco)
    report = AugmentReport(seeds=len(seeds))
    out = epath.Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / (out.name + ".partial")
    seen = {_norm(s.question) for s in seeds}
    with tmp.open("w") as f:
        for c in range(0, len(seeds), cfg.chunk_seeds):
            chunk = seeds[c : c + cfg.chunk_seeds]
            rows = _solve(_candidates(chunk, cfg, teacher, report, seen), cfg, teacher, report)
            for row in rows:
                if not deco_mod.check_row(row, deco, contamination, row["id"]):
                    report.dropped["contaminated"] += 1
                    continue
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                report.kept += 1
                report.kept_by_method[row["method"]] += 1
                report.difficulty[row["difficulty"]] += 1
            done = c + len(chunk)
            rate = done / max(time.time() - start, 1e-9)
            print(
                f"augment: seeds {done}/{len(seeds)}, candidates {report.candidates}, kept {report.kept}, "
                f"dropped {sum(report.dropped.values())}, {rate:.2f} seeds/s, "
                f"ETA {(len(seeds) - done) / max(rate, 1e-9):.0f}s",
                file=log,
                flush=True,
            )
    if out.exists():
        out.unlink()
    tmp.rename(out)
    report.seconds = time.time() - start
    report.contamination = contamination.as_dict()
    rpath = epath.Path(report_path) if report_path else out.parent / (out.name + ".report.json")
    rpath.write_text(json.dumps(report.as_dict(cfg, teacher), indent=1))
    return report
