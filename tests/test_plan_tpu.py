"""XLA:TPU on this CPU machine (libtpu, part of the test extra): the project's Pallas kernels lower with Mosaic for
v5e, v5p and v6e chips and compile; a small model's train step, sampling engine and rl programs compile for a
v5e-8 slice through `plan --compile`; a step the compiler refuses is reported as not fitting; the roofline's cost
probes add up to the written-out program; and with libtpu installed, CPU commands start as before."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mathjax_train.cli import main
from mathjax_train.config import load_config
from mathjax_train.model import attention_kernels, ragged_paged
from mathjax_train.model.target import compiling_for, current
from mathjax_train.parallel.topology import chip_grid, parse_topology
from mathjax_train.plan import programs, roofline
from mathjax_train.plan.compiled import compile_figures, parse_refusal
from mathjax_train.plan.report import format_plan
from mathjax_train.plan.tpu_slice import libtpu_available, slice_devices
from train_helpers import REPO

pytestmark = pytest.mark.skipif(not libtpu_available(), reason="libtpu (jax[tpu], in the test extra) is not installed")

TINY = """
base: {repo}/configs/smoke.yaml
model:
  vocab_size: 1024
  hidden_size: 256
  intermediate_size: 512
  num_layers: 2
  num_heads: 2
  num_kv_heads: 2
  max_position_embeddings: 512
  dtype: bfloat16
  attention_kernel: splash
train:
  seq_len: 256
rl:
  prompts_per_step: 4
  group_size: 4
  max_new_tokens: 64
  minibatches: 2
  kl_coef: 0.01
"""
CHIPS = ("v5e-8", "v5p-8", "v6e-8")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpu") / "tiny.yaml"
    path.write_text(TINY.format(repo=REPO))
    return str(path)


def _plan(capsys, *args) -> dict:
    rc = main(["plan", *args, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == (0 if out["fits"] else 1)
    return out


def _state_and_batch_bytes(plan: dict) -> int:
    """The train step's arguments as the analytic planner counts them: parameters + Adam state, plus this
    chip's batch (5 int32/float32 arrays of rows x micro-batches x seq_len)."""
    a, b = plan["memory_per_device"]["analytic"], plan["batch"]
    batch = 5 * 4 * b["rows_per_device_per_microbatch"] * b["microbatches"] * b["seq_len"]
    return a["params"] + a["optimizer_state"] + batch


def test_the_slices_are_cloud_tpus_own_shapes():
    assert [chip_grid(n, 3) for n in (4, 8, 16, 32, 64, 128)] == [
        (2, 2, 1),
        (2, 2, 2),
        (2, 2, 4),
        (2, 4, 4),
        (4, 4, 4),
        (4, 4, 8),
    ]
    assert [chip_grid(n, 2) for n in (1, 4, 8, 16, 32, 64, 256)] == [
        (1, 1),
        (2, 2),
        (2, 4),
        (4, 4),
        (4, 8),
        (8, 8),
        (16, 16),
    ]
    for name, kind, hosts in (("v5p-32", "TPU v5", 4), ("v5e-64", "TPU v5 lite", 16), ("v6e-8", "TPU v6 lite", 1)):
        topo = parse_topology(name)
        devices = slice_devices(topo)
        assert len(devices) == topo.chips and devices[0].device_kind == kind
        assert len({d.process_index for d in devices}) == hosts == topo.hosts


def _splash(q, k, v, seg):
    return attention_kernels.splash_attention(q, k, v, seg)


def _ragged(q, pages, table, kv_lens, q_lens):
    return ragged_paged.ragged_attention(q, pages, 0, table, kv_lens, q_lens)


def _kernel_args(sharding):
    s = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)  # noqa: E731
    splash = (s((2, 256, 2, 128), jnp.bfloat16), s((2, 256, 2, 128), jnp.bfloat16), s((2, 256, 2, 128), jnp.bfloat16))
    splash += (s((2, 256), jnp.int32),)
    ragged = (s((4, 8, 4, 128), jnp.bfloat16), s((2, 64, 16, 4, 128), jnp.bfloat16), s((4, 16), jnp.int32))
    ragged += (s((4,), jnp.int32), s((4,), jnp.int32))
    return splash, ragged


def _lower(fn, args, devices):
    mesh = Mesh(np.asarray(devices[:1]).reshape(1), ("data",))
    sharded = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(mesh, PartitionSpec())), args
    )
    with jax.set_mesh(mesh), compiling_for(devices[:1]):
        return jax.jit(fn).lower(*sharded)


@pytest.mark.parametrize("slice_name", CHIPS)
def test_pallas_kernels_compile_with_mosaic_for_the_target_chip(slice_name):
    """The kernels ask the devices being compiled for, not the host: Mosaic custom calls for a TPU, none (the
    interpreter's plain ops) for this CPU; and XLA:TPU compiles them."""
    devices = slice_devices(parse_topology(slice_name))
    splash, ragged = _kernel_args(None)
    for fn, args in ((_splash, splash), (_ragged, ragged)):
        lowered = _lower(fn, args, devices)
        assert "tpu_custom_call" in lowered.as_text(), fn.__name__
        compiled = lowered.compile()
        assert compiled.memory_analysis() is not None
    assert current().platform == "cpu"  # outside the block, the host again
    cpu = jax.devices("cpu")
    with compiling_for(cpu):
        assert current().interpret_pallas
        text = jax.jit(_splash).lower(*splash).as_text()
    assert "tpu_custom_call" not in text


def test_tuned_blocks_follow_the_target_chip():
    """JAX's tuned table is keyed by chip: a v6e and a v5e get their own rows, v4 its untuned default."""
    kinds = {name: compiling_for(slice_devices(parse_topology(name))) for name in ("v5e-8", "v6e-8", "v4-8")}
    got = {}
    for name, ctx in kinds.items():
        with ctx as target:
            got[name] = ragged_paged.tuned_blocks(target, jnp.bfloat16, jnp.bfloat16, 32, 16, 128, 16, 1024, 128)
    assert got["v4-8"] == (32, 32)
    assert all(1 <= kv <= 128 and 1 <= q <= 1024 for kv, q in got.values())


def test_a_small_models_programs_compile_for_v5e_8(tiny, capsys):
    """Train step (with its roofline bound), sampling engine and rl programs, each by the TPU compiler."""
    plan = _plan(capsys, "--config", tiny, "--topology", "v5e-8", "--compile")
    c = plan["memory_per_device"]["compiled"]
    step = c["programs"]["train_step"]
    assert c["target"] == "tpu" and not c["estimate"] and "XLA:TPU" in c["compiler"] and "full depth" in c["method"]
    assert plan["fits"] and step["total"] == c["total"] > 0 and step["argument"] > 0 and step["temp"] > 0
    # the state is what the analytic planner counts exactly: parameters + Adam, plus this chip's batch
    assert step["argument"] == pytest.approx(_state_and_batch_bytes(plan), rel=1e-3)
    bound = c["roofline"]["train_step"]
    assert bound["seconds"] == max(bound["compute_seconds"], bound["memory_seconds"]) > 0
    assert bound["flops"] >= bound["model_flops"] > 0

    sampling = _plan(capsys, "--config", tiny, "--topology", "v5e-8", "--sampling", "--compile", "--no-bound")
    e = sampling["compiled"]
    assert set(e["programs"]) == {"prefill", "decode"} and sampling["per_chip"]["kernel"] == "pallas"
    cache = sampling["per_chip"]["kv_cache"]
    assert all(p["argument"] >= cache for p in e["programs"].values())  # the KV pages the plan promises
    assert e["total"] >= max(p["total"] for p in e["programs"].values())

    # rl: the learner over the 8 chips (data=8), the engine on one, the parameters resharded to it
    rl = _plan(capsys, "--config", tiny, "--topology", "v5e-8", "--rl", "--compile", "--no-bound")
    r = rl["memory_per_device"]["compiled"]
    assert set(r["programs"]) == {"update", "reference", "reshard", "prefill", "decode"}
    live = r["live"]
    assert live["reference"] == live["params"] > 0 and live["kv_cache"] > 0
    assert (live["hosts"], live["engine_tensor"], live["slots"]) == (1, 1, 16)
    assert live["engine_params"] == live["params"] > 0  # data parallel: every chip holds the whole model either way
    # each program with the arrays alive beside it: the chip total is at least the update plus the reference, the
    # engine's parameters and its cache; the reshard takes the learner's parameters and gives the engine's
    assert r["total"] >= r["programs"]["update"]["total"] + live["reference"] + live["engine_params"] + live["kv_cache"]
    assert (
        r["programs"]["reshard"]["argument"] >= live["params"]
        and r["programs"]["reshard"]["output"] >= live["engine_params"]
    )
    assert r["total"] == max(r["peaks"].values()) >= r["peaks"]["reshard"]


@pytest.mark.slow  # XLA:TPU compiles the 7B's five programs for 16 chips at 2 and 4 layers: minutes
def test_the_7b_grpo_recipe_compiles_and_fits_a_v5p_32(capsys):
    """configs/grpo_qwen2.5_7b_v5p-32.yaml by XLA:TPU (2 and 4 layers, extrapolated to 28): the learner over the
    16 chips, each of the 4 hosts' engines on its 4 chips with 128 slots, the reshard between them; per chip the
    learner state, the engine's parameters (a quarter of the float32 model) and its KV pages are the analytic
    plan's to the byte, and the chip holds it all within the usable HBM."""
    path = str(REPO / "configs" / "grpo_qwen2.5_7b_v5p-32.yaml")
    plan = _plan(capsys, "--rl", "--config", path, "--compile", "--compile-layers", "2", "4", "--no-bound")
    c, r, a = (
        plan["memory_per_device"]["compiled"],
        plan["memory_per_device"]["rl"],
        plan["memory_per_device"]["analytic"],
    )
    assert plan["fits"] and not c["refused"] and "extrapolated linearly to 28" in c["method"]
    assert set(c["programs"]) == {"update", "reference", "reshard", "prefill", "decode"}
    live = c["live"]
    assert (live["hosts"], live["engine_tensor"], live["slots"], live["pages"]) == (4, 4, 128, r["kv_pages"])
    assert live["state"] == pytest.approx(a["params"] + a["optimizer_state"], rel=1e-6)  # learner bytes per chip
    assert live["reference"] == pytest.approx(a["params"], rel=1e-6)
    assert live["engine_params"] == pytest.approx(r["engine_params"], rel=1e-6)
    assert live["kv_cache"] == pytest.approx(r["kv_cache"], rel=1e-6)  # 8,321 pages, a quarter of the kv heads
    assert c["programs"]["update"]["argument"] >= live["state"]
    assert c["programs"]["reshard"]["output"] == pytest.approx(live["engine_params"], rel=1e-3)
    # while the reshard runs: the learner state, the reference, the engine's new parameters and its cache
    assert c["peaks"]["reshard"] >= live["state"] + live["reference"] + live["engine_params"] + live["kv_cache"]
    assert c["total"] == max(c["peaks"].values()) <= c["usable"]
    text = format_plan(plan)
    assert "128 slots, 8321 KV pages" in text and "reshard peak" in text and "chip while each runs: update" in text


def test_a_step_compiled_at_two_depths_is_extrapolated_to_the_model_s(tiny, capsys):
    """`--compile-layers A B`: the state bytes of the 6-layer step, extrapolated from 2 and 3 layers, are still
    exactly parameters + Adam + this chip's batch (all linear in depth), and the plan says it extrapolated."""
    args = ("--config", tiny, "--topology", "v5e-8", "--compile", "--compile-layers", "2", "3", "--no-bound")
    plan = _plan(capsys, *args, "model.num_layers=6")
    c = plan["memory_per_device"]["compiled"]
    assert c["target"] == "tpu" and "extrapolated linearly to 6" in c["method"]
    assert c["programs"]["train_step"]["argument"] == pytest.approx(_state_and_batch_bytes(plan), rel=1e-3)


def test_a_step_the_compiler_refuses_does_not_fit(tiny, capsys):
    """Far too big a batch for one v5e chip: XLA:TPU refuses it, and plan says so with the bytes it names."""
    args = ("--config", tiny, "--topology", "v5e-1", "--compile", "--no-bound", "train.batch_size=4096", "mesh.data=1")
    plan = _plan(capsys, *args)
    c = plan["memory_per_device"]["compiled"]
    assert not plan["fits"] and c["refused"] == ["train_step"]
    assert c["programs"]["train_step"]["required"] > c["programs"]["train_step"]["capacity"] > 15 * 2**30
    text = format_plan(plan)
    assert "DOES NOT FIT by the compiler's count" in text and "refused by the compiler: needs" in text


def test_refusal_messages_are_read():
    assert parse_refusal(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (96.88G) "
        "exceeds available HBM (15.75G)."
    ) == (int(96.88 * 2**30), int(15.75 * 2**30))
    assert parse_refusal("Ran out of memory in memory space hbm. Used 40.51G of 15.75G hbm.") == (
        int(40.51 * 2**30),
        int(15.75 * 2**30),
    )
    assert parse_refusal("INVALID_ARGUMENT: something else") is None


@pytest.mark.slow  # six compiles; the v5e-8 test above runs the probes and checks the bound they give
def test_cost_probes_add_up_to_the_written_out_program(tiny):
    """XLA counts a loop body once; the probes at 1-2 layers and 1-2 micro-batches, solved for the recipe's depth
    and micro-batches, give the FLOPs of the program with every loop written out, where the scanned program's own
    count falls far short. (Bytes are XLA's estimate of traffic, which depends on how it fuses across layers:
    they are only checked to exceed the loop-once count.)"""
    cfg = load_config(tiny, ["model.num_layers=3", "train.batch_size=8", "train.microbatches=2", "mesh.data=-1"])
    devices = slice_devices(parse_topology("v5e-8"))[:1]  # one chip: the same loops, a quicker compile
    rows = cfg.train.batch_size // cfg.train.microbatches

    def build(n, m):
        c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=rows * m, microbatches=m))
        return programs.train_step(c, devices, roofline.unrolled(cfg.model, n), unroll_microbatches=True)

    est = roofline.by_depth_and_microbatches(build, 3, 2, "train")
    full = compile_figures("full", build(3, 2))
    scanned = compile_figures("scanned", programs.train_step(cfg, devices))
    assert est["flops"] == pytest.approx(full.flops, rel=1e-4)
    assert scanned.flops < 0.6 * full.flops  # what the scanned program's own count would have said
    assert est["bytes"] > scanned.bytes_accessed


def test_without_libtpu_the_estimate_is_labelled(tiny, capsys):
    plan = _plan(capsys, "--config", tiny, "--topology", "v5e-8", "--compile", "--compiler", "cpu")
    c = plan["memory_per_device"]["compiled"]
    assert c["estimate"] and "XLA:CPU on 8 fake devices (an estimate)" in c["compiler"] and not c["roofline"]
    assert "extrapolated" in c["method"] or "full depth" in c["method"]


def test_with_libtpu_installed_cpu_commands_start_as_before(tiny):
    """No JAX_PLATFORMS set, libtpu importable, no TPU chip: the CLI runs JAX on the CPU and prints nothing of
    libtpu's start-up; the same process then compiles for a TPU in its child."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL")}
    probe = (
        "from mathjax_train.cli import platforms; import jax; kept = platforms.keep_off_absent_tpu(); "
        "print(kept, jax.devices()[0].platform, 'libtpu' in open('/proc/self/maps').read())"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    # kept off the TPU backend, on the CPU, and libtpu's library never loaded: start-up costs what it did without it
    assert out.stdout.split() == ["True", "cpu", "False"], out.stderr[-2000:]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mathjax_train.cli",
            "plan",
            "--config",
            tiny,
            "--topology",
            "v5e-8",
            "--compile",
            "--no-bound",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "XLA:TPU for v5e-8" in proc.stdout
    for noise in ("TPU_ACCELERATOR_TYPE", "InitGoogle", "libtpu", "E0000", "TPU_WORKER_HOSTNAMES"):
        assert noise not in proc.stderr, proc.stderr[-2000:]
