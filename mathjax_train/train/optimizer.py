"""AdamW with warmup + cosine/linear/constant decay and global-norm clipping (optax).

Weight decay applies to matmul kernels only: norm scales, biases and the embedding table are
left alone unless `optimizer.decay_all` is set.
"""

from __future__ import annotations

import jax
import optax

from mathjax_train.config import OptimizerConfig


def warmup_steps(opt: OptimizerConfig, total_steps: int) -> int:
    return opt.warmup_steps if opt.warmup_steps >= 0 else int(round(opt.warmup_ratio * total_steps))


def learning_rate_schedule(opt: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then decay to `final_lr_ratio * learning_rate`."""
    peak, final = opt.learning_rate, opt.learning_rate * opt.final_lr_ratio
    warm = min(warmup_steps(opt, total_steps), total_steps)
    rest = max(total_steps - warm, 1)
    if opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, rest, alpha=opt.final_lr_ratio)
    elif opt.schedule == "linear":
        decay = optax.linear_schedule(peak, final, rest)
    else:
        decay = optax.constant_schedule(peak)
    if warm == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), decay], [warm])


def decay_mask(params, decay_all: bool = False):
    """True for parameters that get weight decay: kernels and LoRA adapters (not norms, biases or embeddings)."""

    def leaf_mask(path, _):
        return decay_all or getattr(path[-1], "key", None) in ("kernel", "lora_a", "lora_b")

    return jax.tree_util.tree_map_with_path(leaf_mask, params)


def make_optimizer(opt: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(opt, total_steps)
    parts = []
    if opt.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    parts.append(
        optax.adamw(
            schedule,
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            mask=lambda p: decay_mask(p, opt.decay_all),
        )
    )
    return optax.chain(*parts), schedule
