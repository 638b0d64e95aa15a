"""`plan --sampling`: params and KV pages per chip of the sampling engine on a TPU slice, checked by hand for
LLaMA-2-7B on v5e; the engine sizes its own cache by the same rule; bad flag combinations are named."""

import json
import math
import os
from pathlib import Path

import pytest

from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.config import EngineConfig, ModelConfig, SamplingPlanConfig
from mathjax_train.infer import sizing
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.placement import engine_placement
from mathjax_train.plan.sampling import sampling_plan

RECIPE = str(Path(__file__).resolve().parents[1] / "configs" / "llama2_7b_sft_v5e-64.yaml")
GIB = 2**30
LLAMA2_7B = 6_738_415_616  # parameters (tests/test_plan.py)
BF16 = ["model.param_dtype=bfloat16"]  # a checkpoint imported with `import-hf --param-dtype bfloat16`


def plan_json(capsys, *flags) -> tuple[int, dict]:
    rc = main(["plan", "--config", RECIPE, "--sampling", *flags, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_llama2_7b_on_v5e_by_hand(capsys):
    """bf16 params split 2 ways: everything but the 65 norm scales is split; a 16-token page holds K and V of
    32 layers x 16 of the 32 kv heads x 128 in bf16 on each chip; 0.3 of what 90% of 16 GiB leaves."""
    rc, plan = plan_json(capsys, "--tensor", "2", "--num-slots", "64", "--max-seq-len", "1024", *BF16)
    norms = (2 * 32 + 1) * 4096
    params = (LLAMA2_7B - norms) * 2 // 2 + norms * 2
    page = 2 * 32 * 16 * (32 // 2) * 128 * 2
    assert page == 4 * 2**20
    free = 0.9 * 16 * GIB - params
    pages = min(64 * 64 + 1, int(free * 0.3 // page))
    c = plan["per_chip"]
    assert rc == 0 and plan["fits"] and c["tensor"] == 2 and c["kernel"] == "pallas"
    assert c["params"] == params and c["page_bytes"] == page and c["pages"] == pages == 623
    assert c["sequences_per_replica"] == (pages - 1) // 64 == 9
    assert c["replicas_per_host"] == 2 and c["sequences_per_host"] == 18 and c["sequences_per_slice"] == 18 * 16
    assert plan["topology"]["chips_per_host"] == 4 and plan["engine"]["slots"] == 64


def test_7b_needs_two_v5e_chips(capsys):
    """One 16 GiB chip: bf16 params (12.55 GiB) leave no room for a 4096-token sequence's KV; float32 params
    (the recipe's, 25 GiB) do not fit at all. Both name 2 as the smallest tensor degree."""
    rc, plan = plan_json(capsys, *BF16)
    assert rc == 1 and not plan["fits"] and plan["per_chip"]["tensor"] == 1 and plan["smallest_tensor"] == 2
    assert plan["per_chip"]["params"] / GIB == pytest.approx(12.55, abs=0.01)
    assert [r["fits"] for r in plan["by_tensor"]] == [False, True, True]
    rc, plan = plan_json(capsys, "--max-seq-len", "1024")
    assert rc == 1 and plan["per_chip"]["params"] > 16 * GIB and plan["smallest_tensor"] == 2
    rc = main(["plan", "--config", RECIPE, "--sampling", *BF16])
    out = capsys.readouterr().out
    assert rc == 1 and "DOES NOT FIT (the smallest tensor degree that fits: 2)" in out
    assert "2      6.28 GiB" in out and "<- smallest that fits" in out and "16 of 32 kv heads" not in out
    assert main(["plan", "--config", RECIPE, "--sampling", "--tensor", "-1", *BF16]) == 0  # -1: the host's 4 chips
    assert "tensor=4 (a replica per 4 chips, 1 per host)" in capsys.readouterr().out


def test_engine_sizes_its_cache_by_the_plans_rule(tmp_path, monkeypatch):
    """An engine told the free memory plan computes for a chip takes exactly the pages plan reports."""
    _, ckpt = import_random_model(tmp_path, "llama", seed=1, kv_heads=2)
    model = load_for_inference(ckpt)
    fraction = 5e-6  # some pages of the tiny model (1.5 KiB each per chip), fewer than every slot wants
    engine = dict(num_slots=3, page_size=4, attention="xla", tensor=2, kv_memory_fraction=fraction)
    c = sampling_plan(model.cfg, "v5e-8", SamplingPlanConfig(max_seq_len=96, engine=EngineConfig(**engine)))
    c = c["per_chip"]
    assert 24 < c["pages"] < c["pages_wanted"]
    monkeypatch.setattr(sizing, "free_memory_bytes", lambda placement: c["free"])
    eng = Engine(model, EngineConfig(**engine), max_seq_len=96)
    assert eng.max_pages_per_seq == c["pages_per_sequence"] == math.ceil(96 / 4)
    assert eng.num_pages == c["pages"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tensor", "2"], "--tensor is a setting of the sampling engine: add --sampling"),
        (["--sampling", "--rl"], "plan --sampling plans the sampling engine alone; drop --rl"),
        (["--sampling", "--mfu", "0.5"], "drop --mfu"),
        (["--sampling", "--tensor", "3"], "--tensor 3 does not divide the model's 32 kv heads"),
        (["--sampling", "--tensor", "8"], "a host of v5e-64 has 4 chips"),
        (["--sampling", "--tensor", "0"], "plan --sampling.engine.tensor must be >= 1 or -1"),
        (["--sampling", "--attention", "cpu"], "engine.attention=cpu: the backend is tpu"),
    ],
)
def test_bad_combinations_are_named(capsys, flags, message):
    assert main(["plan", "--config", RECIPE, *flags]) == 2
    err = capsys.readouterr().err
    assert "mathjax-train plan: error:" in err and message in err, err


def test_free_host_memory_that_moves_a_little_keeps_the_page_count(monkeypatch):
    """On CPU the cache takes a share of the available host RAM, which moves from run to run; its page count is a
    shape of every engine program. Rounded to four significant bits, a rerun that finds a few percent more or
    less free RAM keeps the count (and reads its programs back from the compilation cache)."""
    page = 737_280  # a SmolLM2-135M page: 30 layers x (k, v) x 3 kv heads x 16 tokens x 64 x 4 bytes
    placement = engine_placement(1, ModelConfig())
    assert placement.free_memory_bytes() is None  # CPU: the host's RAM
    free = [int(15 * GIB * (0.98 + 0.04 * i / 999)) for i in range(1000)]  # +-2% around 15 GiB
    counts = set()
    for f in free:
        monkeypatch.setattr(sizing, "available_host_bytes", lambda f=f: f)
        seen = sizing.free_memory_bytes(placement)
        assert f * 7 / 8 < seen <= f
        counts.add(sizing.kv_fit(page, seen, 0.5, slots=128, pages_per_seq=512).pages)
    assert len({int(f * 0.5 // page) for f in free}) > 400  # the pages each free size would give unrounded
    assert len(counts) <= 2
    assert [sizing.stable_floor(n) for n in (1, 15, 17, 623, 6840)] == [1, 15, 16, 576, 6656]
    assert 0 < sizing.available_host_bytes() <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
