"""The next step's shape (infer/step_shape.py): chunk length, early exit, speculation, as pure policy."""

from mathjax_train.infer.params import SamplingParams
from mathjax_train.infer.rows import SeqState
from mathjax_train.infer.step_shape import SMALL_BATCH, chunk_limits, speculates


def rows(n: int, **params) -> list[SeqState]:
    sp = SamplingParams(max_tokens=8, **params)
    return [SeqState(id=i, tokens=[1, 2, 3], params=sp, seed=i, round_start=3) for i in range(n)]


def test_small_batches_shorten_chunks_for_stop_strings_and_waiting_rows_only():
    assert chunk_limits(rows(2), pending=False, decode_steps=16) == (16, False)
    assert chunk_limits(rows(2, stop=["\n"]), pending=False, decode_steps=16) == (4, False)
    assert chunk_limits(rows(2), pending=True, decode_steps=16) == (4, True)
    assert chunk_limits(rows(2), pending=True, decode_steps=2) == (1, True)  # never below one token
    # above SMALL_BATCH rows a chunk boundary costs more than an idle row: whole chunks, no early exit
    assert chunk_limits(rows(SMALL_BATCH + 1, stop=["\n"]), pending=True, decode_steps=16) == (16, False)


def test_only_small_greedy_batches_outside_exact_and_ragged_pool_speculate():
    greedy = rows(SMALL_BATCH, temperature=0.0)
    assert speculates(greedy, 2, exact=False, ragged_pool=False)
    assert not speculates(greedy, 0, exact=False, ragged_pool=False)
    assert not speculates(greedy, 2, exact=True, ragged_pool=False)
    assert not speculates(greedy, 2, exact=False, ragged_pool=True)
    assert not speculates(rows(SMALL_BATCH + 1, temperature=0.0), 2, exact=False, ragged_pool=False)
    assert not speculates(greedy[:-1] + rows(1, temperature=0.7), 2, exact=False, ragged_pool=False)
