"""`generate` over a JSONL file: each row's `prompt` -> K completions, written row by row."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from etils import epath
from tqdm import tqdm

from mathjax_train.data.jsonl_source import read_jsonl_numbered
from mathjax_train.infer.generate import Generator, SamplingParams
from mathjax_train.infer.loading import LoadedModel


@dataclass
class JobStats:
    prompts: int
    completions: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A per-completion seed that does not depend on how rows are batched."""
    return (seed * 1_000_003 + prompt_index * 7_919 + sample_index) % (2**32)


def padded_length(n: int, multiple: int = 16) -> int:
    return -(-n // multiple) * multiple


def generate_file(model: LoadedModel, prompts_path, output_path, sp: SamplingParams, *, num_samples: int = 1,
                  seed: int = 0, batch_size: int = 8) -> JobStats:
    rows = [r for _, r in read_jsonl_numbered(prompts_path, {"prompt": str})]
    tok = model.tokenizer
    encoded = [tok.encode(r["prompt"]) for r in rows]
    eos = sorted(set(model.cfg.eos_token_id) | ({tok.eos_id} if tok.eos_id is not None else set()))
    gen = Generator(model.cfg, model.params, eos_ids=eos)
    # One padded prompt length for the whole file: a single compilation serves every batch.
    plen = padded_length(max((len(e) for e in encoded), default=1))
    work = [(i, j) for i in range(len(rows)) for j in range(num_samples)]
    results: dict[tuple[int, int], object] = {}
    out = epath.Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, new_tokens, next_row = time.time(), 0, 0
    with out.open("w") as f, tqdm(total=len(work), desc="generate", unit="completion", file=sys.stderr) as bar:
        for b in range(0, len(work), batch_size):
            chunk = work[b:b + batch_size]
            padded = chunk + [chunk[-1]] * (batch_size - len(chunk))  # fixed batch shape: no recompilation
            gens = gen.generate([encoded[i] for i, _ in padded], sp, [row_seed(seed, i, j) for i, j in padded],
                                prompt_len=plen, decode_text=tok.decode)
            for key, g in zip(chunk, gens):
                results[key] = g
                new_tokens += len(g.token_ids)
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{new_tokens / max(time.time() - start, 1e-9):.1f}")
            while next_row < len(rows) and all((next_row, j) in results for j in range(num_samples)):
                gs = [results.pop((next_row, j)) for j in range(num_samples)]
                row = dict(rows[next_row], completions=[g.text for g in gs], token_ids=[g.token_ids for g in gs],
                           finish_reasons=[g.finish_reason for g in gs])
                f.write(json.dumps(row) + "\n")
                f.flush()
                next_row += 1
    return JobStats(len(rows), len(work), new_tokens, time.time() - start)
