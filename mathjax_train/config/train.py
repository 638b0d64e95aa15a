"""The training loop's settings: optimizer, steps and batches, checkpoints, multi-host start-up."""

from __future__ import annotations

from dataclasses import dataclass

from mathjax_train.errors import ConfigError


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
    # > 0: steps = ceil(epochs * rows / batch_size) over the rows of data.jsonl (mixture `synthetic`, whose
    # size is known), replacing `steps`: "the same epochs" on data whose size a later stage decides
    epochs: float = 0.0
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
        if self.epochs < 0:
            raise ConfigError(f"{where}.epochs must be >= 0 (0: train.steps as given), got {self.epochs}")
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
