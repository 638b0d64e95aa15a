"""Typed configuration: dataclasses for every setting, YAML files, and `key=value` overrides.

A config is a tree of frozen-free dataclasses. `load_config(path, overrides)` reads YAML, applies
dotted overrides (`train.steps=10`), checks every key and type, and names the file and field of
any mistake. Unknown keys are rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


class InputError(ValueError):
    """Bad input from the user: a config, a flag, a file, a data row. The message names the file, line or
    field; the CLI prints it as one line. Anything else is a bug and keeps its traceback."""


class ConfigError(InputError):
    """A config file or override is wrong; the message names the source and the field."""


Template = Literal["alpaca_rft", "question_answer", "chat"]
ComputeDtype = Literal["auto", "float32", "bfloat16", "float16", ""]  # auto: float32 on CPU, bfloat16 on TPU/GPU
Tools = Literal["none", "python"]
Ending = Literal["gsm8k", "the_answer_is", "boxed"]  # the answer line written after a solution
Dtype = Literal["float32", "bfloat16", "float16"]
# blocked (plain XLA, causal blocks only) | dot (plain XLA, full score matrix) | splash (Pallas TPU kernel;
# interpreted off TPU) | cudnn (GPU); model/attention.py `self_attention` picks one
AttentionKernel = Literal["dot", "splash", "cudnn", "blocked"]
EngineAttention = Literal["auto", "xla", "cpu", "pallas"]  # infer/paged_kernels.py: paged_kernel
RlAggregation = Literal["token", "sequence", "constant"]  # rl/loss.py `aggregate`
MismatchMask = Literal["none", "token", "sequence"]  # rl/mismatch.py `correct`
LoraTarget = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
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


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    flag: str = "",
    commas: bool = False,
    spaced: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with the help text the command line derives from it (cli/config_flags.py), and
    where needed its flag (`--name`; no dashes: positional) and, for lists, whether a value may be
    comma-separated or one flag take several values (`--methods a b`); the default is written only here."""
    meta = {"help": help, "flag": flag, "commas": commas, "spaced": spaced}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _check_literal(value: Any, tp: Any, where: str) -> None:
    if value not in typing.get_args(tp):
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")


def check_choices(cfg: Any, where: str) -> None:
    """Every `Literal` field of dataclass `cfg` holds one of its values (nested sections too): for a
    config built in code; one read from YAML or flags was checked as it was read (`_coerce`)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, tp = getattr(cfg, f.name), hints[f.name]
        if typing.get_origin(tp) is Literal:
            _check_literal(value, tp, f"{where}.{f.name}")
        if typing.get_origin(tp) is list and typing.get_origin(typing.get_args(tp)[0]) is Literal:
            for i, item in enumerate(value):
                _check_literal(item, typing.get_args(tp)[0], f"{where}.{f.name}[{i}]")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_choices(value, f"{where}.{f.name}")


def check_shard(shard_index: int, num_shards: int, where: str) -> None:
    """shard_index / num_shards of a job split over hosts (parallel/host_shard.py)."""
    if num_shards < 0:
        raise ConfigError(f"{where}.num_shards: must be >= 0 (0 = jax.process_count()), got {num_shards}")
    if shard_index < -1 or (num_shards and shard_index >= num_shards):
        raise ConfigError(f"{where}.shard_index: {shard_index} is not in [0, {num_shards or 'num_shards'})")


@dataclass
class RopeScaling:
    """RoPE frequency scaling. `type`: none, linear, llama3 (the LLaMA-3.1 piecewise rule)."""

    type: Literal["none", "linear", "llama3"] = "none"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass
class ModelConfig:
    """One decoder family: LLaMA-2/3, Mistral (sliding window), Qwen2 (qkv bias), Qwen3 (QK-norm, its own
    head_dim), tied embeddings."""

    architecture: Literal["llama", "mistral", "qwen2", "qwen3"] = "llama"  # the HF class written by export-hf
    vocab_size: int = 0  # 0 = the tokenizer's size (data.tokenizer), taken when training starts
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int = 0  # 0 = hidden_size // num_heads
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm (eps rms_norm_eps) of queries and keys before RoPE (Qwen3)
    sliding_window: int = 0  # 0 = full attention
    bos_token_id: int | None = 1
    eos_token_id: list[int] = field(default_factory=lambda: [2])
    pad_token_id: int | None = None
    dtype: Dtype = "bfloat16"  # compute dtype
    param_dtype: Dtype = "float32"
    scan_layers: bool = True
    remat_policy: Literal["none", "full", "dots", "dots_with_no_batch_dims"] = "none"
    attention_kernel: AttentionKernel = "blocked"

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def validate(self, where: str = "model") -> None:
        check_choices(self, where)
        if self.vocab_size < 0:
            raise ConfigError(f"{where}.vocab_size must be >= 0 (0 = the tokenizer's size), got {self.vocab_size}")
        if self.head_dim < 0:
            raise ConfigError(f"{where}.head_dim must be >= 0 (0 = hidden_size // num_heads), got {self.head_dim}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{where}.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{where}.hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads})"
            )
        if self.resolved_head_dim % 2:
            raise ConfigError(f"{where}.head_dim must be even for RoPE, got {self.resolved_head_dim}")


@dataclass
class MeshConfig:
    """Device mesh axes; -1 fills with the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: dict[str, list[str]] = field(default_factory=dict)  # logical axis -> mesh axes (parallel/rules.py)
    topology: str = ""  # the TPU slice this config is written for (v5p-32, ...): `plan`'s default, checked at start


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

    def validate(self, where: str = "engine") -> None:
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


@dataclass
class OptimizerConfig:
    """AdamW with warmup then cosine/linear/constant decay, global-norm clipping.

    Weight decay skips norms, biases and embeddings unless `decay_all` is set (the usual LLM rule).
    """

    learning_rate: float = 3e-4
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    warmup_steps: int = -1  # -1: round(warmup_ratio * train.steps)
    warmup_ratio: float = 0.03
    final_lr_ratio: float = 0.0  # lr at the last step, as a fraction of learning_rate
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    decay_all: bool = False
    grad_clip_norm: float = 1.0  # 0 = no clipping

    def validate(self, where: str = "optimizer") -> None:
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ConfigError(f"{where}.schedule: {self.schedule!r} is not one of cosine, linear, constant")
        if self.learning_rate <= 0:
            raise ConfigError(f"{where}.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"{where}.warmup_ratio must be in [0, 1], got {self.warmup_ratio}")


AUTO_VOCAB_CHUNK = 8192  # train.loss_vocab_chunk=-1: Qwen2's 152k and LLaMA-3's 128k vocabularies chunk,
AUTO_CHUNK_ABOVE = 65536  # LLaMA-2's and Mistral's 32k take the full logits


@dataclass
class TrainConfig:
    """The training loop. `batch_size` is global (sequences per optimizer step, all hosts)."""

    steps: int = 1000  # 0: save the initialised model (step 0) and stop
    batch_size: int = 8
    seq_len: int = 512
    microbatches: int = 1  # gradient accumulation: batch_size is split into this many parts
    seed: int = 0
    z_loss: float = 0.0  # weight of log(Z)^2, as in PaLM
    # the loss over vocabulary chunks of this many ids (train/loss.py), never the full logits; 0 = full
    # logits; -1 = auto: AUTO_VOCAB_CHUNK when the vocabulary is larger than AUTO_CHUNK_ABOVE, else full
    loss_vocab_chunk: int = -1
    log_every_steps: int = 10
    peak_tflops_per_device: float = 0.0  # 0 = the table by device kind (CPU: measured once)

    def validate(self, where: str = "train") -> None:
        if self.steps < 0:
            raise ConfigError(f"{where}.steps must be >= 0 (0 saves the initialised model), got {self.steps}")
        for name in ("batch_size", "seq_len", "microbatches", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.microbatches:
            raise ConfigError(
                f"{where}.batch_size ({self.batch_size}) must be a multiple of "
                f"{where}.microbatches ({self.microbatches})"
            )
        if self.loss_vocab_chunk < -1:
            raise ConfigError(
                f"{where}.loss_vocab_chunk must be -1 (auto), 0 (full logits) or a chunk size "
                f">= 1, got {self.loss_vocab_chunk}"
            )

    def vocab_chunk(self, vocab_size: int) -> int:
        """The loss's vocabulary chunk for this vocabulary (0 = full logits); at most the vocabulary."""
        chunk = self.loss_vocab_chunk
        if chunk == -1:
            chunk = AUTO_VOCAB_CHUNK if vocab_size > AUTO_CHUNK_ABOVE else 0
        return min(chunk, vocab_size)


@dataclass
class CheckpointConfig:
    """Orbax checkpoints under OUTPUT_DIR/checkpoints: async, every N steps, the last `keep` kept."""

    every_steps: int = 500
    keep: int = 3
    async_save: bool = True

    def validate(self, where: str = "checkpoint") -> None:
        if self.every_steps < 1 or self.keep < 1:
            raise ConfigError(f"{where}.every_steps and {where}.keep must be >= 1")


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


@dataclass
class DistributedConfig:
    """Multi-host start-up. `auto`: initialize jax.distributed when a TPU pod or the fields say so."""

    initialize: str = "auto"  # auto | always | never
    coordinator_address: str = ""  # host[:port] of process 0; "" = from the TPU environment
    coordinator_port: int = 0  # used when the address has none; 0 = $JAX_COORDINATOR_PORT, else 8476
    num_processes: int = 0  # 0 = from the environment
    process_id: int = -1  # -1 = from the environment
    initialization_timeout_s: int = 300  # how long every host waits for all the others

    def validate(self, where: str = "distributed") -> None:
        if self.initialize not in ("auto", "always", "never"):
            raise ConfigError(f"{where}.initialize: {self.initialize!r} is not one of auto, always, never")
        if not 0 <= self.coordinator_port <= 65535:
            raise ConfigError(
                f"{where}.coordinator_port: {self.coordinator_port} is not a TCP port (1-65535, 0 = default)"
            )
        if self.num_processes < 0 or self.process_id < -1 or self.initialization_timeout_s < 1:
            raise ConfigError(
                f"{where}: num_processes must be >= 0, process_id >= -1 and initialization_timeout_s >= 1"
            )
        if self.num_processes and self.process_id >= self.num_processes:
            raise ConfigError(f"{where}.process_id: {self.process_id} is not in [0, {self.num_processes})")


@dataclass
class RlConfig:
    """`rl`: online RL with verifiable rewards (GRPO family, rl/). Each step samples `prompts_per_step`
    prompts x `group_size` completions on the engine, rewards them with the grader and updates the
    policy `updates_per_batch` times (in `minibatches` parts each) on the clipped surrogate."""

    prompts: dict[str, float] = field(
        default_factory=lambda: {"procedural": 1.0}
    )  # gsm8k | math | procedural | FILE -> rate
    prompts_split: str = "train"  # split of gsm8k / math
    prompts_limit: int = 0  # first N problems of each named/file source (0 = all)
    prompts_per_step: int = 8  # B: prompts (groups) per rollout batch
    group_size: int = 8  # G: completions per prompt
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    updates_per_batch: int = 1  # passes over each rollout batch (ratio != 1 from the second on)
    minibatches: int = 1  # optimizer updates per pass: the batch's B*G rows split this many ways
    normalize_std: bool = True  # advantages (r - mean) / (std + eps) per group; false = Dr. GRPO's r - mean
    aggregation: RlAggregation = (
        "token"  # token (DAPO) | sequence (GRPO: mean per row, then over rows) | constant (Dr. GRPO)
    )
    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float = 0.28  # DAPO's clip-higher; = clip_low for the symmetric PPO clip
    kl_coef: float = 0.0  # weight of the k3 KL estimate to the frozen reference (init_from); 0 = no reference
    entropy_coef: float = 0.0  # entropy bonus; the entropy is logged either way
    format_reward: float = 0.0  # added when an answer can be extracted at all
    overlong: Literal["none", "filter", "penalty"] = "none"  # filter: rows cut at max_new_tokens get no loss
    overlong_penalty: float = 1.0  # subtracted from the reward of a cut row when overlong=penalty
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal, sample more prompts
    max_refill_rounds: int = 3  # extra rollout rounds a step may take to fill its B groups
    tools: Tools = "none"  # python: tool-integrated rollouts, interpreter output masked from the loss
    max_tool_calls: int = 4
    tool_timeout_s: float = 5.0
    answer_fallback: Literal["none", "last_number"] = "none"  # the extraction the reward uses
    grading_timeout_s: float = 5.0
    heldout: str = ""  # eval JSONL (question, answer) scored greedily every eval_every_steps; "" = none
    heldout_limit: int = 0  # first N held-out problems (0 = all)
    # JSONL scored greedily with `heldout` (and in its place for choosing): the step scoring best on it is kept
    # as OUTPUT_DIR/best; disjoint from `heldout`, so the chosen step's held-out score stays an unbiased test
    validation: str = ""
    validation_limit: int = 0  # first N validation problems (0 = all)
    eval_every_steps: int = 0  # 0 = only before the first and after the last step
    # sampler/learner mismatch corrections (rl/mismatch.py); either one makes the learner's own pre-update
    # log-probabilities the ratio's denominator. tis_cap: truncated importance sampling, each token's surrogate
    # weighed by min(p_learner / p_sampler, tis_cap); 0 = off
    tis_cap: float = 0.0
    # token: no loss on tokens whose ratio p_learner / p_sampler leaves [mismatch_low, mismatch_high];
    # sequence: none on rows whose geometric mean ratio leaves it
    mismatch_mask: MismatchMask = "none"
    mismatch_low: float = 0.8
    mismatch_high: float = 1.25
    # the engine samples, and the learner scores, each row alone through one compiled program (infer/exact.py):
    # their log-probabilities agree bit for bit, the first update's ratio is exactly 1; slow sampling
    exact_logprobs: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)

    def validate(self, where: str = "rl") -> None:
        check_choices(self, where)
        for name, low in (
            ("prompts_per_step", 1),
            ("group_size", 2),
            ("max_new_tokens", 1),
            ("updates_per_batch", 1),
            ("minibatches", 1),
            ("prompts_limit", 0),
            ("heldout_limit", 0),
            ("validation_limit", 0),
            ("eval_every_steps", 0),
            ("max_refill_rounds", 0),
            ("max_tool_calls", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{where}.{name} must be >= {low}, got {getattr(self, name)}")
        if (self.prompts_per_step * self.group_size) % self.minibatches:
            raise ConfigError(
                f"{where}.minibatches ({self.minibatches}) must divide prompts_per_step x group_size "
                f"({self.prompts_per_step * self.group_size})"
            )
        if not self.prompts or any(r < 0 for r in self.prompts.values()) or sum(self.prompts.values()) <= 0:
            raise ConfigError(
                f"{where}.prompts: a mapping of source -> rate >= 0 with a positive total, got {self.prompts}"
            )
        if self.clip_low < 0 or self.clip_low >= 1 or self.clip_high < 0:
            raise ConfigError(
                f"{where}: need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}"
            )
        if self.kl_coef < 0 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}: need kl_coef >= 0, temperature > 0 and top_p in (0, 1]")
        if self.tis_cap != 0 and not self.tis_cap >= 1:
            raise ConfigError(f"{where}.tis_cap must be 0 (off) or >= 1 (a cap on the ratio), got {self.tis_cap}")
        if not 0 < self.mismatch_low <= 1 <= self.mismatch_high:
            raise ConfigError(
                f"{where}.mismatch_low / mismatch_high: need 0 < mismatch_low <= 1 <= mismatch_high (a band around "
                f"ratio 1), got {self.mismatch_low}, {self.mismatch_high}"
            )
        if self.exact_logprobs and self.tools != "none":
            raise ConfigError(f"{where}.exact_logprobs: not with tools={self.tools!r} yet (its rollouts extend rows)")
        self.engine.validate(f"{where}.engine")
        if self.engine.tensor != 1:
            raise ConfigError(
                f"{where}.engine.tensor must be 1, got {self.engine.tensor}: the sampler reads the learner's "
                "parameter arrays in place, as the learner lays them out"
            )


@dataclass
class LoraConfig:
    """LoRA adapters on a frozen base (model/lora.py): W x + (alpha / rank) B A dropout(x) for each
    targeted projection. `rank` 0 = off (full fine-tuning). `quantize_base: int8` stores the frozen
    projections as int8 with one float32 scale per output channel (QLoRA-style)."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[LoraTarget] = field(default_factory=lambda: ["q_proj", "v_proj"])  # HF module names
    quantize_base: Literal["none", "int8"] = "none"
    param_dtype: Dtype = "float32"  # the adapters' dtype (the base keeps model.param_dtype)

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def validate(self, where: str = "lora") -> None:
        if self.rank < 0:
            raise ConfigError(f"{where}.rank must be >= 0 (0 = off), got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{where}.dropout must be in [0, 1), got {self.dropout}")
        check_choices(self, where)
        if self.enabled and not self.targets:
            raise ConfigError(f"{where}.targets: adapters (rank > 0) need at least one target projection")
        if self.quantize_base != "none" and not self.enabled:
            raise ConfigError(f"{where}.quantize_base={self.quantize_base} needs adapters ({where}.rank > 0)")


@dataclass
class Config:
    """The whole run: where outputs go, which model, how it is sharded, trained and sampled."""

    output_dir: str = "runs/default"
    init_from: str = ""  # a checkpoint directory written by import-hf or train; "" = random init
    model: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    rl: RlConfig = field(default_factory=RlConfig)  # read by `mathjax-train rl` only

    def validate(self) -> None:
        self.model.validate("model")
        self.lora.validate("lora")
        if self.lora.enabled and not self.init_from:
            raise ConfigError("lora.rank > 0 trains adapters on a frozen base: set init_from to its checkpoint")
        self.train.validate("train")
        self.optimizer.validate("optimizer")
        self.checkpoint.validate("checkpoint")
        self.data.validate("data")
        self.distributed.validate("distributed")
        self.rl.validate("rl")
        if self.model.attention_kernel == "splash" and self.train.seq_len % 128:
            raise ConfigError(
                f"train.seq_len ({self.train.seq_len}) must be a multiple of 128 for "
                "model.attention_kernel=splash (the kernel's block size), or use dot"
            )


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        _check_literal(value, tp, where)
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]  # a scalar where a list is expected: a list of one
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-5" as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported annotation {_describe(tp)}")


def from_dict(cls: type, data: dict, where: str = "config", base: Any = None) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are an error listing the valid ones. Fields
    not given keep `base`'s values (or the defaults); a section given in part keeps the rest of its
    field's own default (e.g. `GenerateConfig(max_new_tokens=512)`), not its class's."""
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for k, v in data.items():
        tp, factory = hints[k], fields[k].default_factory
        if isinstance(v, dict) and isinstance(tp, type) and dataclasses.is_dataclass(tp):
            default = getattr(base, k) if base is not None else None if factory is dataclasses.MISSING else factory()
            kwargs[k] = from_dict(tp, v, f"{where}.{k}", default)
        else:
            kwargs[k] = _coerce(v, tp, f"{where}.{k}")
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_override(data: dict, cls: type, override: str) -> None:
    """Apply one `a.b.c=value` override to the raw mapping `data` (validated against `cls`)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node, node_cls = data, cls
    path: list[str] = []
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node_cls)]
        if part not in names:
            where = ".".join(path) or "config"
            raise ConfigError(f"override {override!r}: unknown key {part!r} in {where}; valid keys: {', '.join(names)}")
        path.append(part)
        tp = _field_types(node_cls)[part]
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(raw) if raw.strip() else ""
            if tp is str and not isinstance(node[part], str):
                node[part] = raw  # keep e.g. output_dir=123 as the string the user typed
        else:
            if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
                raise ConfigError(f"override {override!r}: {'.'.join(path)} is not a section")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(path)} is not a section")
            node_cls = tp


def is_remote(path) -> bool:
    """Whether a path setting names an object store URL (gs://, s3://, ...) rather than a local path."""
    return "://" in str(path)


def read_yaml_mapping(path, where: str, missing: str = "not found") -> dict:
    """A YAML file (local or gs://) whose top level is a mapping; errors start with `where`."""
    from etils import epath

    try:
        text = epath.Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{where}: {missing}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    return data


def merge_mappings(base: dict, over: dict) -> dict:
    """`over` on top of `base`, mapping by mapping; lists and scalars are replaced whole."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_mappings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def relative_to(path: str, source) -> str:
    """`path` as written in the file `source`: relative paths are taken from that file's directory."""
    from etils import epath

    if is_remote(path) or epath.Path(path).is_absolute():
        return path
    return str(epath.Path(source).parent / path)


def read_config_file(path, where: str | None = None, _chain: tuple[str, ...] = ()) -> dict:
    """A YAML config as a mapping, composed: its `base:` files merged in (`read_bases`), then the file
    itself on top. So a recipe states only what differs from its model, topology and recipe bases."""
    where = where or str(path)
    data = read_yaml_mapping(path, where, missing="config file not found")
    bases = data.pop("base", None)
    return data if bases is None else merge_mappings(read_bases(bases, path, where, _chain), data)


def read_bases(bases: Any, source, where: str, _chain: tuple[str, ...] = ()) -> dict:
    """The `base:` value written in the file `source`, a file or a list of files relative to it, each
    read with its own bases, merged in order (a later base wins)."""
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{where}: base: expected a file or a list of files, got {bases!r}")
    merged: dict = {}
    chain = (*_chain, str(source))
    for b in bases:
        target = relative_to(b, source)
        if target in chain:
            raise ConfigError(f"{where}: base: {b} includes itself ({' -> '.join((*chain, target))})")
        merged = merge_mappings(merged, read_config_file(target, f"{where}: base {target}", chain))
    return merged


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type = Config) -> Any:
    """Read a YAML config (with its `base:` files; defaults when `path` is None), apply overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path:
        source = str(path)
        data = read_config_file(path)
    for ov in overrides:
        apply_override(data, cls, ov)
    try:
        cfg = from_dict(cls, data)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


# ----------------------------------------------------------------------------- pipeline stages
# `mathjax-train pipeline` (pipeline/): a YAML of named stages; each stage's mapping is `kind` plus
# the fields of its config below (training stages: a `Config`, sampling: `RftConfig`). Paths the
# pipeline owns (a stage's output directory or file) are set by it and must not be given.


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
