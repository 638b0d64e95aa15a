"""Rollouts: G completions per prompt on the collocated engine (plain, or tool-integrated with the
Python sandbox), each rewarded by the grader; with dynamic sampling, groups whose rewards are all
equal (no learning signal) are dropped and more prompts are drawn, up to rl.max_refill_rounds. On several
hosts every host draws the same prompts, samples and grades its share on its own engine, and every host then
holds every group, whole and in draw order."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import jax

from mathjax_train.config import Config
from mathjax_train.data.problems import Problem
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.params import Completion, SamplingParams, sample_seed
from mathjax_train.parallel.host_gather import allgather_json
from mathjax_train.parallel.host_shard import owns
from mathjax_train.rl.prompts import PromptStream
from mathjax_train.rl.rewards import Score, score


@dataclass
class Group:
    problem: Problem
    prompt_ids: list[int]
    completions: list[Completion]
    scores: list[Score]

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.scores]


@dataclass
class Rollout:
    groups: list[Group]  # at most rl.prompts_per_step, in draw order
    sampled: int = 0  # groups sampled, dropped ones included
    dropped: int = 0  # groups dropped by dynamic sampling (all rewards equal)
    sampled_tokens: int = 0  # every sampled token, dropped groups' included
    scores: list[Score] = field(default_factory=list)  # every sampled completion's, dropped groups' included
    skipped: dict = field(default_factory=dict)  # prompts not sampled, by reason


class Sampler:
    """Samples on this host's engine, which reads `model.params` at every call: the learner sets them after
    each update (rl/reshard.py: on the devices, no host copy). `tools="python"` runs tool-integrated decoding."""

    def __init__(self, model: LoadedModel, cfg: Config):
        rl = cfg.rl
        self.model, self.rl = model, rl
        self.add_special_tokens = cfg.data.template != "chat"  # a chat template writes its own BOS
        self.params = SamplingParams(max_tokens=rl.max_new_tokens, temperature=rl.temperature, top_p=rl.top_p)
        engine_cfg = replace(rl.engine, num_slots=rl.engine_slots(jax.process_count()))
        self.tools = None
        if rl.tools == "python":
            from mathjax_train.infer.tool_generate import ToolGenerator

            self.tools = ToolGenerator(
                model,
                max_calls=rl.max_tool_calls,
                timeout_s=rl.tool_timeout_s,
                batch_size=engine_cfg.num_slots,
                engine_config=engine_cfg,
                add_special_tokens=self.add_special_tokens,
            )
            self.engine = self.tools.engine
        else:
            from mathjax_train.infer.engine import Engine

            self.engine = Engine(model, engine_cfg, max_seq_len=cfg.train.seq_len + 1, exact=rl.exact_logprobs)

    def set_params(self, params) -> None:
        self.model.params = params

    def drop_params(self) -> None:
        """Let go of the engine's parameters before the next are made (the reshard's peak then holds one set)."""
        self.model.params = {}
        self.engine.release_params()

    def sample(self, prompts: list[str], prompt_ids: list[list[int]], seeds: list[list[int]]) -> list[list[Completion]]:
        if self.tools is None:
            return self.engine.generate(prompt_ids, self.params, seeds)
        flat = self.tools.generate(
            [p for p, s in zip(prompts, seeds) for _ in s], self.params, [x for s in seeds for x in s]
        )
        out, i = [], 0
        for s in seeds:
            out.append(flat[i : i + len(s)])
            i += len(s)
        return out

    def close(self) -> None:
        if self.tools is not None:
            self.tools.close()


def collect(stream: PromptStream, sampler: Sampler, template, cfg: Config) -> Rollout:
    """One step's groups: rounds of B prompts x G samples until B groups are kept (see module doc)."""
    rl, tok = cfg.rl, sampler.model.tokenizer
    budget = cfg.train.seq_len + 1 - rl.max_new_tokens  # the longest prompt a row can hold
    out = Rollout([])
    for _ in range(1 + (rl.max_refill_rounds if rl.dynamic_sampling else 0)):
        drawn: list[tuple[int, Problem, str, list[int]]] = []  # (stream index, problem, prompt, prompt ids)
        while len(drawn) < rl.prompts_per_step:
            k, problem = stream.next()
            text = template.format_prompt(problem.question)
            ids = tok.encode(text, add_special_tokens=sampler.add_special_tokens)
            if len(ids) > budget:
                out.skipped["prompt_too_long"] = out.skipped.get("prompt_too_long", 0) + 1
                continue
            drawn.append((k, problem, text, ids))
        seeds = [[sample_seed(cfg.train.seed, k, j) for j in range(rl.group_size)] for k, *_ in drawn]
        for (k, problem, text, ids), (comps, scores) in zip(drawn, _sample_and_score(sampler, drawn, seeds, rl)):
            group = Group(problem, ids, comps, scores)
            out.sampled += 1
            out.sampled_tokens += sum(c.num_tokens for c in comps)
            out.scores += group.scores
            if rl.dynamic_sampling and len(set(group.rewards)) == 1:
                out.dropped += 1
            elif len(out.groups) < rl.prompts_per_step:
                out.groups.append(group)
        if len(out.groups) >= rl.prompts_per_step:
            break
    return out


def _sample_and_score(sampler: Sampler, drawn: list, seeds: list[list[int]], rl) -> list[tuple[list, list]]:
    """(completions, scores) of every drawn prompt in draw order: host h of n samples and grades the prompts
    i % n == h, and the hosts exchange the results (parallel/host_gather.py)."""
    host, hosts = jax.process_index(), jax.process_count()
    mine = [i for i in range(len(drawn)) if owns(i, host, hosts)]
    samples = sampler.sample([drawn[i][2] for i in mine], [drawn[i][3] for i in mine], [seeds[i] for i in mine])
    local = [(comps, [score(drawn[i][1].answer, c, rl) for c in comps]) for i, comps in zip(mine, samples)]
    if hosts == 1:
        return local
    parts = allgather_json([[[asdict(c) for c in comps], [asdict(s) for s in scores]] for comps, scores in local])
    out: list = [None] * len(drawn)
    for h, part in enumerate(parts):
        for i, (comps, scores) in zip([i for i in range(len(drawn)) if owns(i, h, hosts)], part):
            out[i] = ([Completion(**c) for c in comps], [Score(**s) for s in scores])
    return out
