"""The sampling engine (`EngineConfig`, `GenerateConfig`) and the commands that sample through it: generate,
evaluate, rft, augment, serve and `plan --sampling`."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from mathjax_train.config.data import Template
from mathjax_train.config.loading import check_choices, check_shard, setting
from mathjax_train.errors import ConfigError

ComputeDtype = Literal["auto", "float32", "bfloat16", "float16", ""]  # auto: float32 on CPU, bfloat16 on TPU/GPU
Tools = Literal["none", "python"]
EngineAttention = Literal["auto", "xla", "cpu", "pallas"]  # infer/paged_kernels.py: paged_kernel
SLOTS_HELP = "engine slots: rows decoded together (0 = 128 on CPU, 256 on TPU/GPU)"
TENSOR_HELP = (
    "this host's devices one engine spans (tensor parallelism: params split by the mesh rules, the KV cache by "
    "kv heads); -1 = as many local devices as the model's heads split evenly over"
)
SHARD_INDEX_HELP = "this host's shard (-1 = jax.process_index())"
NUM_SHARDS_HELP = "shards, one per host of a pod (0 = jax.process_count())"
DTYPE_HELP = 'compute dtype: auto = float32 on CPU, bfloat16 on TPU/GPU; "" = the checkpoint\'s'
# What synthetic rows are checked against unless told otherwise (decontaminate, augment).
DECONTAMINATE_BENCHMARKS = ("gsm8k", "math")
DECONTAMINATE_NGRAM = 13


@dataclass
class EngineConfig:
    """The sampling engine: decode slots, the paged KV cache and the scheduler's budgets."""

    num_slots: int = setting(0, help=SLOTS_HELP)
    page_size: int = setting(16, help="tokens per KV-cache page")
    num_pages: int = setting(
        0, help="KV-cache pages (0 = enough for every slot at the longest sequence, within kv_memory_fraction)"
    )
    kv_memory_fraction: float = setting(
        0.3, help="share of the memory still free the KV cache may take (host RAM on CPU, HBM elsewhere)"
    )
    decode_steps: int = setting(16, help="decode steps per compiled chunk; new rows are admitted between chunks")
    prefill_budget: int = setting(512, help="prompt tokens prefilled per chunk while other rows are decoding")
    prefix_cache: bool = setting(
        True,
        help="keep prefilled prompt pages after their rows end and reuse them for prompts that start the same way",
    )
    layers: Literal["auto", "scan", "unroll"] = setting(
        "auto",
        help="decode with the layers unrolled (their weights as separate arrays: faster on CPU, a second "
        "copy of the weights in memory) or scanned; auto = unroll on CPU",
    )
    attention: EngineAttention = setting(
        "auto",
        help="how attention reads the paged KV cache: cpu = the C++ kernel (float32 on CPU), pallas = JAX's "
        "ragged paged attention kernel (TPU), xla = plain JAX; auto = cpu on CPU, pallas on TPU where they "
        "serve the model, else xla",
    )
    tensor: int = setting(1, help=TENSOR_HELP)
    speculative_tokens: int = setting(
        2,
        help="in a batch of at most 8 rows, all greedy: tokens guessed per step from the row's own text (prompt "
        "lookup) and checked in the same model call; 0 = off",
    )

    def validate(self, where: str = "engine") -> None:
        if not 0 <= self.speculative_tokens <= 16:
            raise ConfigError(f"{where}.speculative_tokens must be in [0, 16], got {self.speculative_tokens}")
        for name, low in (
            ("num_slots", 0),
            ("page_size", 1),
            ("num_pages", 0),
            ("decode_steps", 1),
            ("prefill_budget", 16),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{where}.{name} must be >= {low}, got {getattr(self, name)}")
        if not 0 < self.kv_memory_fraction <= 1:
            raise ConfigError(f"{where}.kv_memory_fraction must be in (0, 1], got {self.kv_memory_fraction}")
        if self.tensor < 1 and self.tensor != -1:
            raise ConfigError(f"{where}.tensor must be >= 1 or -1 (every local device that fits), got {self.tensor}")


@dataclass
class SamplingPlanConfig:
    """`plan --sampling`: the sampling engine of one host of the slice, for the model of plan's --config."""

    max_seq_len: int = setting(0, help="longest prompt + completion in tokens (0 = model.max_position_embeddings)")
    engine: EngineConfig = setting(default_factory=EngineConfig)

    def validate(self, where: str = "sampling") -> None:
        if self.max_seq_len < 0:
            raise ConfigError(f"{where}.max_seq_len must be >= 0, got {self.max_seq_len}")
        self.engine.validate(f"{where}.engine")


@dataclass
class GenerateConfig:
    """Sampling settings shared by `generate`, `evaluate` and the synthesis commands."""

    max_new_tokens: int = setting(256, help="most new tokens per completion")
    temperature: float = setting(0.0, help="0 = greedy")
    top_p: float = setting(1.0, help="nucleus sampling mass")
    top_k: int = setting(0, help="sample among the k most likely tokens (0 = all)")
    num_samples: int = setting(1, help="completions per prompt (pass@k, maj@k)")
    seed: int = setting(0, help="per-row seeds derive from it: a completion does not depend on its batch")
    batch_size: int = setting(0, help=SLOTS_HELP)
    tensor: int = setting(1, help=TENSOR_HELP)
    stop: list[str] = setting(default_factory=list, help="extra stop string (repeatable; added to EOS)")

    def engine(self) -> EngineConfig:
        """The engine settings these carry (slots, tensor degree); the rest are the engine's defaults."""
        return EngineConfig(num_slots=self.batch_size, tensor=self.tensor)


@dataclass
class GenerateJobConfig:
    """`generate`: completions for each `prompt` of a JSONL file, optionally tool-integrated."""

    checkpoint: str = setting("", help="checkpoint directory (import-hf or train)")
    prompts: str = setting("", help="JSONL with a `prompt` field per row")
    output: str = setting("", help="JSONL of completions")
    dtype: ComputeDtype = setting("auto", help=DTYPE_HELP)
    tools: Tools = setting("none", help="python: run each ```python block the model closes and feed its output back")
    max_tool_calls: int = setting(4, help="code executions per completion (tools python)")
    tool_timeout_s: float = setting(5.0, flag="--tool-timeout", help="seconds per code execution (tools python)")
    shard_index: int = setting(-1, help=SHARD_INDEX_HELP)
    num_shards: int = setting(0, help=NUM_SHARDS_HELP)
    generate: GenerateConfig = setting(default_factory=GenerateConfig)

    def validate(self, where: str = "generate") -> None:
        check_choices(self, where)
        if self.max_tool_calls < 0 or self.tool_timeout_s <= 0:
            raise ConfigError(f"{where}: max_tool_calls must be >= 0 and tool_timeout_s > 0")
        check_shard(self.shard_index, self.num_shards, where)
        self.generate.engine().validate(f"{where}.generate")


@dataclass
class EvalConfig:
    """`evaluate`: checkpoint and benchmark, prompt construction, decoding, grading, outputs."""

    checkpoint: str = setting("", help="checkpoint directory (import-hf or train)")
    dataset: str = setting(
        "gsm8k",
        help="gsm8k | math | math500 | a JSONL file (question/problem, answer, optional "
        "level, subject/type, id/unique_id, solution)",
    )
    split: str = setting("test", help="split of a named dataset")
    data_dir: str = setting("", help='manual data directory ("" = $MATHJAX_DATA_DIR)')
    limit: int = setting(0, help="evaluate the first N problems (0 = all)")
    template: Template = setting("question_answer", help="prompt template")
    shots: int = setting(0, help="few-shot exemplars (from the train split or --exemplars)")
    exemplars: str = setting("", help='JSONL of solved exemplars (question, answer, solution); "" = the train split')
    output_dir: str = setting("", help='"" = runs/eval/<dataset>; re-running resumes')
    dtype: ComputeDtype = setting("auto", help=DTYPE_HELP)
    tools: Tools = setting("none", help="python: tool-integrated reasoning")
    answer_fallback: Literal["auto", "none", "last_number"] = setting(
        "auto", help="when no boxed/'The answer is' answer: auto = the last number for gsm8k only"
    )
    grading_timeout_s: float = setting(5.0, flag="--grading-timeout", help="seconds per symbolic comparison")
    shard_index: int = setting(-1, help=SHARD_INDEX_HELP)
    num_shards: int = setting(0, help=NUM_SHARDS_HELP)
    generate: GenerateConfig = setting(default_factory=lambda: GenerateConfig(max_new_tokens=512))

    def validate(self, where: str = "eval") -> None:
        check_choices(self, where)
        for name, value, low in (
            ("limit", self.limit, 0),
            ("shots", self.shots, 0),
            ("generate.num_samples", self.generate.num_samples, 1),
            ("generate.batch_size", self.generate.batch_size, 0),
            ("generate.max_new_tokens", self.generate.max_new_tokens, 1),
        ):
            if value < low:
                raise ConfigError(f"{where}.{name}: must be >= {low}, got {value}")
        if self.generate.temperature < 0 or not 0 < self.generate.top_p <= 1:
            raise ConfigError(f"{where}.generate: temperature must be >= 0 and top_p in (0, 1]")
        if self.grading_timeout_s <= 0:
            raise ConfigError(f"{where}.grading_timeout_s: must be > 0, got {self.grading_timeout_s}")
        check_shard(self.shard_index, self.num_shards, where)
        self.generate.engine().validate(f"{where}.generate")


@dataclass
class RftConfig:
    """`rft`: sample k paths per training question from one or more checkpoints, keep verified
    distinct ones (synth/rft.py), write SFT JSONL with provenance; resumable and sharded per host."""

    checkpoints: list[str] = setting(
        default_factory=list, flag="--checkpoint", help="checkpoint to sample from (repeat to pool several)"
    )
    output: str = setting("", help="JSONL of SFT rows; re-running resumes; pods: OUTPUT.shard-i-of-n")
    dataset: str = setting("gsm8k", help="gsm8k | math | procedural | a JSONL file (question, solution, answer)")
    split: str = setting("train", help="train only (synthetic data never comes from test questions)")
    data_dir: str = setting("", help='manual data directory ("" = $MATHJAX_DATA_DIR)')
    limit: int = setting(0, help="first N questions (0 = all; procedural: N problems, default 100)")
    procedural_seed: int = setting(0, help="seed of the procedural problems")
    template: Template = setting("alpaca_rft", help="prompt template")
    k: int = setting(100, help="samples per question per checkpoint")
    temperature: float = setting(0.7, help="sampling temperature")
    top_p: float = setting(1.0, help="nucleus sampling mass")
    max_new_tokens: int = setting(512, help="most new tokens per path")
    seed: int = setting(0, help="per-row seeds derive from it")
    batch_size: int = setting(0, help=SLOTS_HELP)
    tensor: int = setting(1, help=TENSOR_HELP)
    dtype: ComputeDtype = setting("auto", help=DTYPE_HELP)
    tools: Tools = setting("none", help="python: tool-integrated paths, verified the same way")
    max_tool_calls: int = setting(4, help="code executions per path")
    tool_timeout_s: float = setting(5.0, flag="--tool-timeout", help="seconds per code execution")
    shard_index: int = setting(-1, help=SHARD_INDEX_HELP)
    num_shards: int = setting(0, help=NUM_SHARDS_HELP)
    dedup_with_reference: bool = setting(
        True,
        help="drop samples that compute what the reference solution does; off for questions whose "
        "references are not trained on (pool them with select include_references: false)",
    )

    def validate(self, where: str = "rft") -> None:
        if not self.checkpoints:
            raise ConfigError(f"{where}.checkpoints: at least one checkpoint is needed")
        if not self.output:
            raise ConfigError(f"{where}.output: an output JSONL path is needed")
        check_choices(self, where)
        for name, low in (("k", 1), ("batch_size", 0), ("max_new_tokens", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{where}.{name}: must be >= {low}, got {getattr(self, name)}")
        if self.limit < 0 or self.max_tool_calls < 0 or self.tool_timeout_s <= 0:
            raise ConfigError(f"{where}: limit and max_tool_calls must be >= 0 and tool_timeout_s > 0")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(
                f"{where}: temperature must be >= 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}"
            )
        check_shard(self.shard_index, self.num_shards, where)
        self.engine().validate(where)

    def engine(self) -> EngineConfig:
        """The engine settings these carry (slots, tensor degree); the rest are the engine's defaults."""
        return EngineConfig(num_slots=self.batch_size, tensor=self.tensor)


AugmentMethod = Literal["rephrase", "change_numbers", "harder"]  # synth/augment.py has a prompt for each


@dataclass
class AugmentJobConfig:
    """`augment`: new questions from seed problems via a teacher (a checkpoint or an OpenAI-compatible
    endpoint), kept by self-consistency, decontaminated (synth/augment.py). The algorithm's own
    `AugmentConfig` is built from these fields and takes its defaults from them."""

    seeds: str = setting("", help="gsm8k | math (their train splits) | a JSONL file")
    output: str = setting("", help="JSONL of kept rows (question, solution, answer, provenance)")
    report: str = setting("", help='report JSON ("" = OUTPUT.report.json)')
    teacher_checkpoint: str = setting("", help="one of our checkpoints, sampled in-process (or --teacher-url)")
    teacher_url: str = setting(
        "", help="base URL of an OpenAI-compatible API, e.g. http://host:8000/v1 (or --teacher-checkpoint)"
    )
    teacher_model: str = setting("", help="model name sent to --teacher-url")
    teacher_api: Literal["chat", "completions"] = setting("chat", help="endpoint of --teacher-url")
    api_key_env: str = setting("OPENAI_API_KEY", help='env var holding the endpoint\'s API key ("" = none)')
    concurrency: int = setting(8, help="parallel HTTP requests")
    methods: list[AugmentMethod] = setting(
        default_factory=lambda: list(typing.get_args(AugmentMethod)), spaced=True, help="how new questions are made"
    )
    n: int = setting(4, help="teacher solutions per new question")
    min_agreement: float = setting(0.5, help="share of the n answers the majority needs")
    temperature: float = setting(0.7, help="solution sampling temperature")
    question_temperature: float = setting(0.7, help="question sampling temperature")
    top_p: float = setting(0.95, help="nucleus sampling mass (questions and solutions)")
    max_tokens: int = setting(768, help="most tokens per solution")
    question_max_tokens: int = setting(384, help="most tokens per new question")
    seed: int = setting(0, help="questions are sampled with this seed, solutions with seed + 1")
    max_seeds: int = setting(0, help="use the first N seeds (0 = all)")
    last_number_fallback: bool = setting(
        False, help="accept a solution's last number as its answer when it boxes none (GSM8K style)"
    )
    data_dir: str = setting("", help='benchmark directory ("" = $MATHJAX_DATA_DIR)')
    benchmarks: list[str] = setting(
        default_factory=lambda: list(DECONTAMINATE_BENCHMARKS),
        commas=True,
        help="test sets to decontaminate against: gsm8k, math or JSONL files with `question`",
    )
    ngram: int = setting(DECONTAMINATE_NGRAM, help="word n-gram length of the overlap check")
    dtype: ComputeDtype = setting("auto", help="checkpoint teacher: " + DTYPE_HELP)
    batch_size: int = setting(0, help="checkpoint teacher: " + SLOTS_HELP)
    prompt_format: Literal["chat", "plain"] = setting(
        "chat", help="checkpoint teacher: chat template (fallback format without one) or raw text"
    )

    def validate(self, where: str = "augment") -> None:
        """The job's own fields; the algorithm's (methods, n, min_agreement) are `AugmentConfig.validate`'s."""
        check_choices(self, where)
        if self.teacher_checkpoint and self.teacher_url:
            raise ConfigError(f"{where}: --teacher-checkpoint and --teacher-url are both set; give exactly one")
        if not (self.teacher_checkpoint or self.teacher_url):
            raise ConfigError(f"{where}: give exactly one of --teacher-checkpoint CKPT or --teacher-url URL")
        if self.teacher_url and not self.teacher_model:
            raise ConfigError(f"{where}: --teacher-url needs --teacher-model NAME")
        for name, low in (
            ("concurrency", 1),
            ("max_tokens", 1),
            ("question_max_tokens", 1),
            ("max_seeds", 0),
            ("ngram", 1),
            ("batch_size", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{where}.{name}: must be >= {low}, got {getattr(self, name)}")
        if min(self.temperature, self.question_temperature) < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}: temperature and question_temperature must be >= 0 and top_p in (0, 1]")
        if not self.benchmarks:
            raise ConfigError(f"{where}.benchmarks: at least one test set is needed")


@dataclass
class ServeConfig:
    """`serve`: an OpenAI-compatible HTTP server over the sampling engine (serve/launch.py)."""

    checkpoint: str = setting("", flag="checkpoint", help="checkpoint directory (import-hf or train output)")
    host: str = setting("127.0.0.1", help="address to listen on")
    port: int = setting(8000, help="0 picks a free port (printed on the ready line)")
    engine: EngineConfig = setting(default_factory=EngineConfig)
    max_seq_len: int = setting(0, help="longest prompt + completion (0 = the model's max_position_embeddings)")
    dtype: ComputeDtype = setting("auto", help=DTYPE_HELP)
    model_name: str = setting("", help='the `model` clients must send ("" = the checkpoint directory\'s name)')
    api_key_env: str = setting(
        "", help='require `Authorization: Bearer <key>` with the key read from this env var ("" = no key)'
    )
    warmup: bool = setting(
        True,
        help="compile the engine's programs for every batch size and prompt chunk at start-up, then answer one request",
    )
    quiet: bool = setting(False, help="no access log on stderr")

    def validate(self, where: str = "serve") -> None:
        check_choices(self, where)
        if not 0 <= self.port <= 65535 or self.max_seq_len < 0:
            raise ConfigError(
                f"{where}: port must be in [0, 65535] and max_seq_len >= 0, got {self.port}, {self.max_seq_len}"
            )
        self.engine.validate(f"{where}.engine")
