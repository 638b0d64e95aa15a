"""The stages of `mathjax-train pipeline` (pipeline/): a YAML of named stages; each stage's mapping is `kind`
plus the fields of its config (training stages: a `Config`, sampling: `RftConfig`, here: the others). Paths
the pipeline owns (a stage's output directory or file) are set by it and must not be given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mathjax_train.config.data import Ending
from mathjax_train.config.loading import check_choices, setting
from mathjax_train.config.run import Config
from mathjax_train.config.sampling import DECONTAMINATE_BENCHMARKS, DECONTAMINATE_NGRAM, EvalConfig, GenerateConfig
from mathjax_train.errors import ConfigError


@dataclass
class TokenizerStageConfig:
    """`tokenizer` stage and `data build-tokenizer`: a byte-level BPE tokenizer trained on procedural problems."""

    vocab_size: int = setting(512, help="tokens in the vocabulary (specials included)")
    examples: int = setting(20000, help="procedural train problems in the corpus")
    seed: int = setting(0, help="seed of the corpus problems")
    template: Literal["alpaca_rft", "question_answer"] = setting("alpaca_rft", help="prompt template of the corpus")
    ending: Ending = setting("gsm8k", help="answer line of the corpus solutions")
    levels: list[int] = setting(default_factory=lambda: [1, 2, 3, 4, 5], spaced=True, help="difficulty levels 1-5")

    def validate(self, where: str = "tokenizer") -> None:
        check_choices(self, where)  # sizes: data/tokenizer_training.build_tokenizer, which knows the specials


@dataclass
class ProblemsStageConfig:
    """`problems` stage and `data procedural`: procedural problems as JSONL, e.g. a held-out set to evaluate on."""

    split: Literal["train", "heldout"] = setting("heldout", help="train or heldout (disjoint by construction)")
    count: int = setting(200, help="problems to write")
    seed: int = setting(0, help="seed of the problems")
    levels: list[int] = setting(default_factory=lambda: [1, 2, 3, 4, 5], spaced=True, help="difficulty levels 1-5")
    templates: list[str] = setting(
        default_factory=list, spaced=True, help="families or templates, e.g. gsm_style (none = all families)"
    )
    exclude: list[str] = setting(
        default_factory=list,
        spaced=True,
        help="JSONL files whose questions are skipped (a validation set disjoint from a test set)",
    )

    def validate(self, where: str = "problems") -> None:
        check_choices(self, where)
        if self.count < 1:
            raise ConfigError(f"{where}.count: must be >= 1, got {self.count}")


@dataclass
class DecontaminateConfig:
    """`decontaminate`: drop rows of `input` that copy a test question (synth/decontaminate.py)."""

    input: str = setting("", flag="input", help="JSONL of training rows")
    data_dir: str = setting("", help='manual data directory ("" = $MATHJAX_DATA_DIR)')
    benchmarks: list[str] = setting(
        default_factory=lambda: list(DECONTAMINATE_BENCHMARKS),
        commas=True,
        help="test sets: gsm8k, math (its test split holds MATH500) or JSONL files with `question`",
    )
    ngram: int = setting(DECONTAMINATE_NGRAM, help="word n-gram length of the overlap check")
    fields: list[str] = setting(default_factory=lambda: ["question"], commas=True, help="row fields to check")

    def validate(self, where: str = "decontaminate") -> None:
        if not self.input or not self.benchmarks or not self.fields or self.ngram < 1:
            raise ConfigError(f"{where}: input, benchmarks and fields must be set and ngram >= 1")


@dataclass
class SelectConfig:
    """`select`: pool the sampled paths of several rft outputs per question and keep the verified
    distinct ones again (synth/rft.py `select`), at most `max_paths_per_question` (0 = all)."""

    inputs: list[str] = field(default_factory=list)
    max_paths_per_question: int = 0
    include_references: bool = True  # false: only the sampled paths (questions whose solutions stay unseen)
    check_steps: bool = False  # procedural questions: also turn down paths whose steps follow no worked method

    def validate(self, where: str = "select") -> None:
        if not self.inputs or self.max_paths_per_question < 0:
            raise ConfigError(f"{where}: inputs must list rft outputs and max_paths_per_question be >= 0")


@dataclass
class EvaluateStageConfig:
    """`evaluate`: each checkpoint greedily (`eval`), and, when `sampled.num_samples` > 1, again with
    that sampling for pass@k and maj@k."""

    checkpoints: list[str] = field(default_factory=list)
    eval: EvalConfig = field(default_factory=EvalConfig)  # its checkpoint and output_dir are the pipeline's
    sampled: GenerateConfig = field(default_factory=lambda: GenerateConfig(num_samples=0, temperature=0.7))

    def validate(self, where: str = "evaluate") -> None:
        if not self.checkpoints:
            raise ConfigError(f"{where}.checkpoints: at least one checkpoint is needed")
        self.eval.validate(f"{where}.eval")
        if self.sampled.num_samples == 1 or self.sampled.num_samples < 0:
            raise ConfigError(
                f"{where}.sampled.num_samples: 0 (no sampled run) or >= 2, got {self.sampled.num_samples}"
            )


@dataclass
class ScalingStageConfig:
    """`scaling`: the same SFT (`train`) on the first N rows of `data` for each N in `sizes`, each
    evaluated (`eval`), then metric = a + b ln(N) fitted (synth/scaling.py)."""

    data: str = ""
    sizes: list[int] = field(default_factory=list)
    epochs: float = 0.0  # > 0: train.steps = ceil(epochs * N / train.batch_size) per size; 0: train.steps as given
    metric: str = "accuracy"
    train: Config = field(default_factory=Config)  # data.jsonl and output_dir are the pipeline's
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self, where: str = "scaling") -> None:
        if not self.data or len(set(self.sizes)) < 2 or min(self.sizes) < 1 or self.epochs < 0:
            raise ConfigError(f"{where}: data must be set, sizes two or more distinct sizes >= 1 and epochs >= 0")
        self.train.validate()
        self.eval.validate(f"{where}.eval")


@dataclass
class ExportStageConfig:
    """`export`: a checkpoint as an HF directory (export-hf)."""

    checkpoint: str = ""
    dtype: Literal["", "float32", "bfloat16", "float16"] = ""  # "" = the checkpoint's param dtype
    max_shard_gb: float = 5.0

    def validate(self, where: str = "export") -> None:
        check_choices(self, where)
        if not self.checkpoint:
            raise ConfigError(f"{where}.checkpoint: must be set")
