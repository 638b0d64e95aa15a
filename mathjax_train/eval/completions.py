"""Completion sources for the harness: one function `(prompts, seeds) -> list[Completion]`.

`plain_source` samples on the engine (infer/engine.py): the samples of one prompt in a call share
its prefill. `tool_source` runs tool-integrated decoding. The harness sees only the function, so
another source (a fake in tests) plugs in the same way.
"""

from __future__ import annotations

from typing import Callable, Sequence

from mathjax_train.config import EngineConfig, InputError
from mathjax_train.infer.engine import engine_for_prompts
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.params import Completion, SamplingParams

CompleteFn = Callable[[Sequence[str], Sequence[int]], list[Completion]]

__all__ = ["Completion", "CompleteFn", "plain_source", "tool_source"]


def plain_source(
    model: LoadedModel,
    sp: SamplingParams,
    all_prompts: Sequence[str],
    *,
    engine_config: EngineConfig | None = None,
    add_special_tokens: bool = True,
    engine=None,
) -> CompleteFn:
    """Greedy / sampled decoding on an engine with `engine_config` (slots, tensor degree; default: the
    engine's defaults) sized from `all_prompts` (the whole run, resumed rows included), or on the given
    `engine` (one that already serves `model`, e.g. the RL sampler)."""
    tok = model.tokenizer
    lengths = [len(tok.encode(p, add_special_tokens=add_special_tokens)) for p in all_prompts]
    limit = model.cfg.max_position_embeddings
    longest = max(range(len(lengths)), key=lengths.__getitem__) if lengths else 0
    if lengths and lengths[longest] + sp.max_tokens > limit:
        raise InputError(
            f"prompt {longest} has {lengths[longest]} tokens; with --max-new-tokens {sp.max_tokens} "
            f"that exceeds the model's max_position_embeddings {limit}: use fewer --shots or fewer "
            "new tokens"
        )
    if engine is None:
        engine = engine_for_prompts(model, lengths, sp, engine_config)
    elif lengths and engine.fits(lengths[longest], sp.max_tokens):
        raise InputError(
            f"prompt {longest} has {lengths[longest]} tokens; {engine.fits(lengths[longest], sp.max_tokens)}"
        )

    def complete(prompts: Sequence[str], seeds: Sequence[int]) -> list[Completion]:
        groups: dict[str, list[int]] = {}  # the samples of one prompt go in together: one prefill
        for i, p in enumerate(prompts):
            groups.setdefault(p, []).append(i)
        rows = {}
        for p, idx in groups.items():
            ids = tok.encode(p, add_special_tokens=add_special_tokens)
            for i, row in zip(idx, engine.submit(ids, sp, [seeds[i] for i in idx])):
                rows[i] = row
        engine.run()
        return [rows[i].completion for i in range(len(prompts))]

    return complete


class _ToolSource:
    """Tool-integrated reasoning: code blocks the model writes run in the sandbox and their output
    is fed back before decoding resumes (infer.tool_generate). One ToolGenerator serves the whole
    run, so the compiled model and the warm sandboxes are reused across calls."""

    def __init__(
        self,
        model: LoadedModel,
        sp: SamplingParams,
        engine_config: EngineConfig,
        max_calls: int,
        timeout_s: float,
        add_special_tokens: bool,
    ):
        from mathjax_train.infer.tool_generate import ToolGenerator

        self.sp = sp
        self.tg = ToolGenerator(
            model,
            max_calls=max_calls,
            timeout_s=timeout_s,
            batch_size=engine_config.num_slots,  # 0: the engine's default (ToolGenerator's own default is 8)
            add_special_tokens=add_special_tokens,
            engine_config=engine_config,
        )

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Completion]:
        return self.tg.generate(list(prompts), self.sp, list(seeds))

    def close(self) -> None:
        self.tg.close()


def tool_source(
    model: LoadedModel,
    sp: SamplingParams,
    *,
    engine_config: EngineConfig | None = None,
    max_calls: int = 4,
    timeout_s: float = 5.0,
    add_special_tokens: bool = True,
) -> CompleteFn:
    return _ToolSource(model, sp, engine_config or EngineConfig(), max_calls, timeout_s, add_special_tokens)
