"""`RlConfig`: online RL with verifiable rewards (rl/), read by `mathjax-train rl`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mathjax_train.config.loading import check_choices
from mathjax_train.config.sampling import EngineConfig, Tools
from mathjax_train.errors import ConfigError

RlAggregation = Literal["token", "sequence", "constant"]  # rl/loss.py `aggregate`
MismatchMask = Literal["none", "token", "sequence"]  # rl/mismatch.py `correct`


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

    def engine_slots(self, hosts: int) -> int:
        """Slots of one host's engine: engine.num_slots, else the host's share of a step's groups (prompt i samples
        on host i mod hosts): ceil(prompts_per_step / hosts) x group_size."""
        return self.engine.num_slots or -(-self.prompts_per_step // hosts) * self.group_size

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
