"""Group concurrent generation requests into fixed-shape Generator batches on one worker thread.

HTTP threads submit one Job per choice and wait on its future; the worker takes the oldest job,
adds waiting jobs with the same sampling key (temperature, top_p, stop strings: the Generator
applies these to a whole batch) up to `max_batch`, and runs them together. Shapes are bucketed:
the batch is always padded to `max_batch` rows and prompt / new-token lengths are rounded up to
powers of two, so a stream of requests compiles a handful of programs, not one per request.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from mathjax_train.infer.generate import Generator, SamplingParams
from mathjax_train.infer.loading import LoadedModel

MIN_BUCKET = 16


@dataclass
class Job:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int
    future: Future = field(default_factory=Future)

    @property
    def key(self) -> tuple:
        if self.temperature <= 0:  # greedy ignores top_p
            return (0.0, 1.0, self.stop)
        return (self.temperature, self.top_p, self.stop)


@dataclass
class Result:
    text: str
    token_ids: list[int]  # generated ids, the final EOS included when there was one
    finish_reason: str  # stop (EOS or a stop string) | length


@dataclass
class BatcherStats:
    batches: int = 0
    rows: int = 0  # real rows run (padding rows excluded)
    shapes: set = field(default_factory=set)  # (batch, prompt_len, new_tokens) buckets compiled
    errors: int = 0

    def as_dict(self) -> dict:
        return {"batches": self.batches, "rows": self.rows, "errors": self.errors,
                "shapes": sorted(list(s) for s in self.shapes)}


def bucket(n: int, limit: int) -> int:
    """n rounded up to a power of two (at least MIN_BUCKET), but never above `limit`."""
    b = MIN_BUCKET
    while b < n:
        b *= 2
    return max(n, min(b, limit))


class Batcher:
    """Runs jobs on a single worker thread; `submit` is safe from any thread."""

    def __init__(self, model: LoadedModel, max_batch: int = 8, batch_wait_s: float = 0.005,
                 max_queue: int = 4096):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.max_batch, self.batch_wait_s, self.max_queue = model, max_batch, batch_wait_s, max_queue
        tok = model.tokenizer
        self.eos_ids = sorted(set(model.cfg.eos_token_id) | ({tok.eos_id} if tok.eos_id is not None else set()))
        self.generator = Generator(model.cfg, model.params, eos_ids=self.eos_ids)
        self.context = model.cfg.max_position_embeddings
        self.stats = BatcherStats()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="mathjax-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._queue) >= self.max_queue:
                raise OverflowError(f"{len(self._queue)} generations are already queued")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        for job in self._take_all():
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("server shutting down"))

    def _take_all(self) -> list[Job]:
        with self._cond:
            jobs = list(self._queue)
            self._queue.clear()
        return jobs

    def _next_group(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            short = len(self._queue) < self.max_batch
        if short and self.batch_wait_s > 0:
            time.sleep(self.batch_wait_s)  # let requests that arrive together share the batch
        with self._cond:
            if self._closed:
                return None
            if not self._queue:
                return []
            key = self._queue[0].key
            group: list[Job] = []
            longest = most_new = 0
            for j in self._queue:
                if len(group) == self.max_batch:
                    break
                fits = max(longest, len(j.prompt_ids)) + max(most_new, j.max_tokens) <= self.context
                if j.key == key and (fits or not group):
                    group.append(j)
                    longest, most_new = max(longest, len(j.prompt_ids)), max(most_new, j.max_tokens)
            taken = set(map(id, group))
            self._queue = deque(j for j in self._queue if id(j) not in taken)
        # A job whose request was cancelled (e.g. refused as overloaded) is not run.
        return [j for j in group if j.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            if not group:
                continue
            try:
                results = self.run(group)
            except Exception as e:  # a failed batch fails its requests, never the worker
                self.stats.errors += 1
                for job in group:
                    job.future.set_exception(e)
                continue
            for job, res in zip(group, results):
                job.future.set_result(res)

    def run(self, jobs: list[Job]) -> list[Result]:
        """Generate for jobs that share one sampling key (called on the worker thread)."""
        longest = max(len(j.prompt_ids) for j in jobs)
        most_new = max(j.max_tokens for j in jobs)
        new_len = bucket(most_new, self.context - longest)
        prompt_len = bucket(longest, self.context - new_len)
        padded = jobs + [jobs[-1]] * (self.max_batch - len(jobs))
        first = jobs[0]
        sp = SamplingParams(max_new_tokens=new_len, temperature=first.temperature, top_p=first.top_p,
                            stop=first.stop)
        gens = self.generator.generate([j.prompt_ids for j in padded], sp, [j.seed for j in padded],
                                       prompt_len=prompt_len, decode_text=self.model.tokenizer.decode)
        self.stats.batches += 1
        self.stats.rows += len(jobs)
        self.stats.shapes.add((self.max_batch, prompt_len, new_len))
        return [self._finish(j, g.token_ids) for j, g in zip(jobs, gens)]

    def _finish(self, job: Job, token_ids: list[int]) -> Result:
        """Cut the batch's output to this job's max_tokens, EOS and stop strings."""
        ids = token_ids[:job.max_tokens]
        eos_at = next((i for i, t in enumerate(ids) if t in self.eos_ids), None)
        if eos_at is not None:
            ids = ids[:eos_at + 1]
        text = self.model.tokenizer.decode([t for t in ids if t not in self.eos_ids])
        cut = min((text.find(s) for s in job.stop if s in text), default=-1)
        if cut >= 0:
            return Result(text[:cut], ids, "stop")
        return Result(text, ids, "stop" if eos_at is not None else "length")
