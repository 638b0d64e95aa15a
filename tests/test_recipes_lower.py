"""Every TPU recipe's programs trace and lower for its own slice's chips (libtpu's description of the slice, no
TPU needed), at 2 layers with the recipe's mesh and shardings, nothing allocated: the train step of the training
recipes (its splash attention lowered with Mosaic), and rl's learner update, reference and sampling engine for the
RL recipes (with the reshard of its parameters to the engines). `plan --compile` goes on to compile them at full depth (tests/test_plan_tpu.py does so for a small
model; benchmarks/compile_recipes.py for every recipe)."""

import dataclasses
from collections import Counter
from pathlib import Path

import pytest

from mathjax_train.config import load_config
from mathjax_train.infer.paged_kernels import paged_kernel
from mathjax_train.model.target import Target
from mathjax_train.parallel.topology import parse_topology
from mathjax_train.pipeline.spec import is_pipeline_file
from mathjax_train.plan import programs
from mathjax_train.plan.tpu_slice import libtpu_available, slice_devices

pytestmark = pytest.mark.skipif(not libtpu_available(), reason="libtpu (jax[tpu], in the test extra) is not installed")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(
    p for p in CONFIGS.glob("*.yaml") if not is_pipeline_file(str(p)) and load_config(str(p)).mesh.topology
)


def test_the_recipes_cover_the_families_and_a_large_slice():
    assert len(RECIPES) >= 20
    families = Counter(parse_topology(load_config(str(p)).mesh.topology).family.name for p in RECIPES)
    assert set(families) >= {"v4", "v5e", "v5p", "v6e"}
    assert max(parse_topology(load_config(str(p)).mesh.topology).chips for p in RECIPES) >= 64


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_tpu_recipe_lowers_for_its_slice(path):
    cfg = load_config(str(path))
    topo = parse_topology(cfg.mesh.topology)
    devices = slice_devices(topo)
    small = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_layers=2))
    if path.name.startswith("grpo_"):  # an rl recipe: the learner on every chip, each host's engine on T of its own
        _, tensor, hosts = programs.rl_engine_devices(cfg, devices)
        assert (tensor, hosts) == (cfg.rl.engine.tensor, topo.hosts)
        kernel = paged_kernel(
            cfg.rl.engine.attention, cfg.model, cfg.rl.engine.page_size, tensor, Target("tpu", topo.device_kind)
        )
        lowered, live = programs.rl_programs(small, devices, kernel)
        assert set(lowered) == {"update", "reference", "reshard", "prefill", "decode"} and live["kv_cache"] > 0
        assert "sharding" in lowered.pop("reshard").as_text()  # an identity: its shardings are the program
        texts = [low.as_text() for low in lowered.values()]
    else:
        texts = [programs.train_step(small, devices).as_text()]
    assert all(len(t) > 10_000 for t in texts)
    if cfg.model.attention_kernel == "splash":
        assert "tpu_custom_call" in texts[0]  # the Mosaic kernel the slice runs, not the interpreter's ops


def test_the_docs_compile_table_lists_every_recipe():
    """docs/tpu.md's table (benchmarks/compile_recipes.py writes it) has a row for every recipe with a topology."""
    page = (CONFIGS.parent / "docs" / "tpu.md").read_text()
    table = page.split("<!-- compile-table:begin -->")[1].split("<!-- compile-table:end -->")[0]
    rows = {line.split("|")[1].strip().split(" ")[0] for line in table.splitlines() if line.startswith("| ")}
    assert {p.name for p in RECIPES} <= rows
