"""`generate` over a JSONL file: each row's `prompt` -> K completions on the engine, written in order."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from etils import epath
from tqdm import tqdm

from mathjax_train.config import EngineConfig
from mathjax_train.data.jsonl_source import read_jsonl_numbered
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.params import SamplingParams, sample_seed


@dataclass
class JobStats:
    prompts: int
    completions: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


def engine_for_prompts(
    model: LoadedModel, prompt_lengths, sp: SamplingParams, num_slots: int = 0, config: EngineConfig | None = None
) -> Engine:
    """An engine sized for a batch job: sequences up to the longest prompt plus max_tokens."""
    cfg = config or EngineConfig()
    if num_slots:
        cfg.num_slots = num_slots
    longest = max(prompt_lengths, default=1)
    return Engine(model, cfg, max_seq_len=longest + sp.max_tokens)


def generate_file(
    model: LoadedModel,
    prompts_path,
    output_path,
    sp: SamplingParams,
    *,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 0,
) -> JobStats:
    """`batch_size` is the engine's slot count (0 = its default). Rows are written in input order as
    soon as all their samples are done."""
    rows = [r for _, r in read_jsonl_numbered(prompts_path, {"prompt": str})]
    encoded = [model.tokenizer.encode(r["prompt"]) for r in rows]
    engine = engine_for_prompts(model, map(len, encoded), sp, batch_size)
    groups = [
        engine.submit(ids, sp, [sample_seed(seed, i, j) for j in range(num_samples)]) for i, ids in enumerate(encoded)
    ]
    out = epath.Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, written = time.time(), 0
    with (
        out.open("w") as f,
        tqdm(total=len(rows) * num_samples, desc="generate", unit="completion", file=sys.stderr) as bar,
    ):

        def flush():
            nonlocal written
            bar.update(engine.stats.finished - bar.n)
            bar.set_postfix(tok_s=f"{engine.stats.generated_tokens / max(time.time() - start, 1e-9):.1f}")
            while written < len(rows) and all(r.completion is not None for r in groups[written]):
                cs = [r.result() for r in groups[written]]
                f.write(
                    json.dumps(
                        dict(
                            rows[written],
                            completions=[c.text for c in cs],
                            token_ids=[c.token_ids for c in cs],
                            finish_reasons=[c.finish_reason for c in cs],
                        )
                    )
                    + "\n"
                )
                f.flush()
                written += 1

        engine.run(progress=flush)
        flush()
    new_tokens = sum(r.result().num_tokens for g in groups for r in g)
    return JobStats(len(rows), len(rows) * num_samples, new_tokens, time.time() - start)
