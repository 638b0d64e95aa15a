"""The RL prompt stream: problems drawn from a weighted mixture of sources, resumable exactly.

Sources: `procedural` (unbounded, problem i of the train split), `gsm8k` / `math` (their train
split from the manual directory) and JSONL files (eval format: question, answer). Draw k picks its
source from `sample_seed(seed, k)`; a finite source is walked in a fresh shuffle each epoch. The
state is the draw count and each source's position: the next problem depends on nothing else.
"""

from __future__ import annotations

import random
from typing import Any

from mathjax_train.config import Config, InputError
from mathjax_train.data.problems import Problem, from_procedural
from mathjax_train.eval import datasets
from mathjax_train.infer.params import sample_seed


class PromptStream:
    def __init__(self, cfg: Config):
        rl, data = cfg.rl, cfg.data
        self.seed = cfg.train.seed
        self.names = list(rl.prompts)
        self.rates = [rl.prompts[n] for n in self.names]
        self.draws = 0
        self.positions = {n: 0 for n in self.names}
        self._finite: dict[str, list[Problem]] = {}
        self._procedural: dict[str, Any] = dict(
            seed=data.seed, split="train", templates=data.procedural_templates or None, levels=data.procedural_levels
        )
        for name in self.names:
            if name != "procedural":
                problems = datasets.load_problems(name, rl.prompts_split, data.data_dir or None, rl.prompts_limit)
                if not problems:
                    raise InputError(f"rl.prompts: {name} has no problems")
                self._finite[name] = problems

    def _problem(self, name: str, position: int) -> Problem:
        if name == "procedural":
            from mathjax_train.data import procedural

            return from_procedural(procedural.generate(position, **self._procedural), position)
        problems = self._finite[name]
        epoch, i = divmod(position, len(problems))
        order = list(range(len(problems)))
        random.Random(sample_seed(self.seed, epoch, len(problems))).shuffle(order)
        return problems[order[i]]

    def next(self) -> tuple[int, Problem]:
        """(draw index, problem); the draw index seeds the problem's samples."""
        k = self.draws
        name = random.Random(sample_seed(self.seed, k)).choices(self.names, weights=self.rates)[0]
        problem = self._problem(name, self.positions[name])
        self.positions[name] += 1
        self.draws += 1
        return k, problem

    def get_state(self) -> dict:
        return {"draws": self.draws, "positions": dict(self.positions)}

    def set_state(self, state: dict) -> None:
        if set(state["positions"]) != set(self.names):
            raise InputError(
                f"the checkpoint's prompt sources {sorted(state['positions'])} are not rl.prompts "
                f"{sorted(self.names)}; resume with the same rl.prompts"
            )
        self.draws, self.positions = int(state["draws"]), {k: int(v) for k, v in state["positions"].items()}
