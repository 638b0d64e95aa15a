"""Where training batches come from (`DataConfig`), and the prompt templates and answer endings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mathjax_train.config.loading import check_choices
from mathjax_train.errors import ConfigError

Template = Literal["alpaca_rft", "question_answer", "chat"]
Ending = Literal["gsm8k", "the_answer_is", "boxed"]  # the answer line written after a solution


@dataclass
class DataConfig:
    """Where training batches come from. `mixture` names a SeqIO mixture or task (see data/), or a
    built-in toy source (`toy_copy`: learn to copy random tokens; needs no tokenizer)."""

    mixture: str = "toy_copy"
    data_dir: str = ""  # manual directory with gsm8k/ and math/; "" = $MATHJAX_DATA_DIR
    tokenizer: str = ""  # directory with tokenizer files; "" = init_from's tokenizer/
    template: Template = "alpaca_rft"  # prompt template (data/templates.py)
    ending: Ending = "gsm8k"  # answer ending written after solutions
    pack: bool = True
    overflow: Literal["truncate", "drop"] = "truncate"  # examples longer than seq_len (always counted)
    rates: dict[str, float] = field(default_factory=dict)  # task -> mixing rate, overrides defaults
    jsonl: list[str] = field(default_factory=list)  # synthetic SFT JSONL files for the `synthetic` task
    procedural_levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])  # procedural_* difficulty
    procedural_templates: list[str] = field(default_factory=list)  # the `procedural` task's templates; [] = all
    min_level: int = 0  # keep only GSM8K/MATH/synthetic rows with level >= this (a "hard subset"; counted)
    calculator: bool = False  # keep GSM-style <<3*4=12>> calculator annotations in solutions
    seed: int = 0  # mixture sampling, per-epoch shuffles and procedural problems
    cache_dir: str = ""  # `data cache` output: tasks cached there are read pre-tokenized (same ids as uncached)

    def validate(self, where: str = "data") -> None:
        check_choices(self, where)
        bad = [lv for lv in self.procedural_levels if lv not in (1, 2, 3, 4, 5)]
        if bad or not self.procedural_levels:
            raise ConfigError(
                f"{where}.procedural_levels: must be a non-empty subset of [1, 2, 3, 4, 5], "
                f"got {self.procedural_levels}"
            )
        for task, rate in self.rates.items():
            if rate < 0:
                raise ConfigError(f"{where}.rates.{task}: must be >= 0, got {rate}")
