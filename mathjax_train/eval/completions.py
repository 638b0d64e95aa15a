"""Completion sources for the harness: one function `(prompts, seeds) -> list[Completion]`.

`plain_source` decodes through infer's Generator with one padded prompt length and one batch
shape for the whole run (a single compilation). The harness sees only the function, so another
source (tool-integrated decoding, a fake in tests) plugs in the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from mathjax_train.infer.batch_job import padded_length
from mathjax_train.infer.generate import Generator, SamplingParams
from mathjax_train.infer.loading import LoadedModel


@dataclass
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # eos | stop | length
    tool_calls: int = 0


CompleteFn = Callable[[Sequence[str], Sequence[int]], list[Completion]]


def eos_ids(model: LoadedModel) -> list[int]:
    tok = model.tokenizer
    return sorted(set(model.cfg.eos_token_id) | ({tok.eos_id} if tok.eos_id is not None else set()))


def plain_source(model: LoadedModel, sp: SamplingParams, all_prompts: Sequence[str], *, batch_size: int,
                 add_special_tokens: bool = True) -> CompleteFn:
    """Greedy / sampled decoding. The padded prompt length comes from `all_prompts` (the whole
    run, resumed rows included), so a resumed run decodes with the same shapes as a fresh one."""
    tok = model.tokenizer
    lengths = [len(tok.encode(p, add_special_tokens=add_special_tokens)) for p in all_prompts]
    plen = padded_length(max(lengths, default=1))
    limit = model.cfg.max_position_embeddings
    if plen + sp.max_new_tokens > limit:
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        raise ValueError(f"prompt {longest} has {lengths[longest]} tokens (padded to {plen}); with "
                         f"--max-new-tokens {sp.max_new_tokens} that exceeds the model's "
                         f"max_position_embeddings {limit}: use fewer --shots or fewer new tokens")
    gen = Generator(model.cfg, model.params, eos_ids=eos_ids(model))

    def complete(prompts: Sequence[str], seeds: Sequence[int]) -> list[Completion]:
        out: list[Completion] = []
        for b in range(0, len(prompts), batch_size):
            ids = [tok.encode(p, add_special_tokens=add_special_tokens) for p in prompts[b:b + batch_size]]
            chunk_seeds = list(seeds[b:b + batch_size])
            pad = batch_size - len(ids)  # fixed batch shape: the last batch repeats its last row
            gens = gen.generate(ids + [ids[-1]] * pad, sp, chunk_seeds + [chunk_seeds[-1]] * pad,
                                prompt_len=plen, decode_text=tok.decode)
            out += [Completion(g.text, len(g.token_ids), g.finish_reason) for g in gens[:len(ids)]]
        return out

    return complete


class _ToolSource:
    """Tool-integrated reasoning: code blocks the model writes run in the sandbox and their output
    is fed back before decoding resumes (infer.tool_generate). One ToolGenerator serves the whole
    run, so the compiled model and the warm sandboxes are reused across batches."""

    def __init__(self, model: LoadedModel, sp: SamplingParams, batch_size: int, max_calls: int, timeout_s: float):
        from mathjax_train.infer.tool_generate import ToolGenerator

        self.sp = sp
        self.tg = ToolGenerator(model, max_calls=max_calls, timeout_s=timeout_s, batch_size=batch_size)

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Completion]:
        gens = self.tg.generate(list(prompts), self.sp, list(seeds))
        return [Completion(g.text, len(g.token_ids), g.finish_reason, g.calls) for g in gens]

    def close(self) -> None:
        self.tg.close()


def tool_source(model: LoadedModel, sp: SamplingParams, *, batch_size: int, max_calls: int = 4,
                timeout_s: float = 5.0) -> CompleteFn:
    return _ToolSource(model, sp, batch_size, max_calls, timeout_s)
