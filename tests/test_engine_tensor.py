"""The engine with tensor parallelism (engine.tensor = T over this host's first T devices): greedy tokens equal
transformers' for every T the model's kv heads allow, with each attention kernel; params really are split by the
mesh rules and the KV cache by kv heads; repeated runs compile nothing new; a T the model or host cannot take is
refused naming engine.tensor."""

import re

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.config import ConfigError, EngineConfig, InputError
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams
from mathjax_train.infer.placement import resolve_tensor
from test_engine import SMALL, hf_greedy, prompts_of

NEW = 8  # greedy tokens per row: enough to cross pages (page_size 4) and decode chunks (4 steps)


@pytest.fixture(scope="module")
def kv2(tmp_path_factory):
    """LLaMA, 4 heads over 2 kv heads, scanned layers."""
    hf, ckpt = import_random_model(tmp_path_factory.mktemp("kv2"), "llama", seed=3, kv_heads=2)
    return hf, ckpt


@pytest.fixture(scope="module")
def kv4(tmp_path_factory):
    """Qwen2 (q/k/v biases), 4 kv heads, layers unscanned (layers_0, layers_1)."""
    d = tmp_path_factory.mktemp("kv4")
    hf, _ = import_random_model(d, "qwen2", seed=5, kv_heads=4)
    assert main(["import-hf", str(d / "hf"), str(d / "unscanned"), "--no-scan", "--dtype", "float32"]) == 0
    return hf, d / "unscanned"


def _engine(ckpt, tensor, attention, **kw):
    return Engine(load_for_inference(ckpt), EngineConfig(tensor=tensor, attention=attention, **SMALL, **kw))


def _check_greedy(hf, eng, first: bool = True):
    """Mixed prompt lengths admitted into 2 slots, and one prompt sampled 3 times (prefilled once, its pages
    shared): every row is transformers' greedy continuation."""
    prompts = prompts_of((5, 17, 30), seed=7)
    shared = prompts_of((11,), seed=8)[0]
    sp = SamplingParams(max_tokens=NEW, ignore_eos=True)
    out = eng.generate(prompts + [shared], sp, [[0], [1], [2], [3, 4, 5]])
    for p, group in zip(prompts + [shared], out):
        want = hf_greedy(hf, p, NEW)
        assert [c.token_ids for c in group] == [want] * len(group)
    if first:
        assert eng.stats.prompt_prefills == 4  # the shared prompt once


def _check_placement(eng, tensor: int, kv_heads: int):
    """Params split by the rules over T devices (q/k/v by heads, the MLP by its hidden units), the cache
    split on its kv-head axis, and each of them still placed so after running."""
    params = eng.program_params()  # the layout the programs read (infer/layout.py)
    layer = params["layers"] if "layers" in params else params["layers_0"]
    k_proj = layer["self_attn"]["k_proj"]["kernel"]  # (layers?, embed, kv_heads, head_dim)
    gate = layer["mlp"]["gate_proj"]["kernel"]
    for x in (k_proj, gate, params["embed_tokens"]["embedding"], params["lm_head"]["kernel"]):
        assert len(x.sharding.device_set) == tensor
    if tensor > 1:
        assert isinstance(k_proj.sharding, NamedSharding) and "tensor" in k_proj.sharding.spec
        assert k_proj.sharding.shard_shape(k_proj.shape)[-2] == kv_heads // tensor
        assert gate.sharding.shard_shape(gate.shape)[-1] == gate.shape[-1] // tensor
    for name, x in eng.cache.items():
        assert len(x.sharding.device_set) == tensor
        axis = 3 if name == "pool" else 1  # the pallas pool's combined (K, V) head axis, else kv heads
        assert x.sharding.shard_shape(x.shape)[axis] == x.shape[axis] // tensor
        assert all(s == d for i, (s, d) in enumerate(zip(x.sharding.shard_shape(x.shape), x.shape)) if i != axis)


def _compiled(eng) -> dict[str, int]:
    p = eng.programs
    return {"prefill": p._prefill._cache_size(), "decode": p._decode._cache_size(), "copy": p._copy._cache_size()}


@pytest.mark.parametrize(
    ("tensor", "attention"),  # unsplit xla is test_engine's plain-JAX path: slow set only
    [pytest.param(1, "xla", marks=pytest.mark.slow), (2, "xla"), (1, "cpu"), (2, "cpu")],
)
def test_greedy_equals_transformers_split_over_kv_heads(kv2, tensor, attention):
    hf, ckpt = kv2
    eng = _engine(ckpt, tensor, attention, num_slots=2)
    assert eng.kernel.name == attention and eng.placement.tensor == tensor
    _check_greedy(hf, eng)
    _check_placement(eng, tensor, 2)
    # the same work again compiles nothing: one program per recorded shape, the cache keeps its sharding
    compiled, shapes, sharding = _compiled(eng), set(eng.shapes), eng.cache["k"].sharding
    _check_greedy(hf, eng, first=False)
    assert _compiled(eng) == compiled and eng.shapes == shapes and eng.cache["k"].sharding == sharding
    # (the engine's own record: Programs outlive a test file, JAX's compiled caches do not; conftest)
    recorded = {k: len({s for s in eng.shapes if s[0] == k}) for k in ("prefill", "decode")}
    assert {k: compiled[k] for k in recorded} == recorded


@pytest.mark.parametrize("tensor", [2, 4])
def test_four_kv_heads_unscanned_split_two_and_four_ways(kv4, tensor):
    hf, ckpt = kv4
    eng = _engine(ckpt, tensor, "cpu", num_slots=4)
    _check_greedy(hf, eng)
    _check_placement(eng, tensor, 4)


def test_pallas_kernel_runs_per_device_on_its_heads(kv2):
    """The ragged kernel (interpreted on CPU) inside shard_map: each device writes and reads its pool share."""
    hf, ckpt = kv2
    eng = _engine(ckpt, 2, "pallas", num_slots=2)
    assert eng.kernel.name == "pallas"
    p = prompts_of((6, 13), seed=9)
    out = eng.generate(p, SamplingParams(max_tokens=5, ignore_eos=True), [[0], [1, 2]])
    for prompt, group in zip(p, out):
        assert [c.token_ids for c in group] == [hf_greedy(hf, prompt, 5)] * len(group)
    _check_placement(eng, 2, 2)


def test_programs_move_no_cache_between_devices(kv2):
    """The compiled decode and prefill exchange activations only (all-reduces of hidden states, the logits):
    no collective carries anything the size of the cache's page axis."""
    _, ckpt = kv2
    eng = _engine(ckpt, 2, "xla", num_slots=2, num_pages=98)
    eng.generate(prompts_of((9,), seed=1), SamplingParams(max_tokens=3, ignore_eos=True), [[0]])
    texts = []
    for name in ("prefill", "decode"):
        for compiled in _lowered(eng, name):
            texts.append(compiled)
    collectives = [
        m
        for t in texts
        for m in re.findall(r"= (\S+) (?:all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)\(", t)
    ]
    assert collectives and not [c for c in collectives if "98" in c]


def _lowered(eng, name):
    """The compiled text of a program at the shapes this engine ran."""
    p, s = eng.programs, sorted(x for x in eng.shapes if x[0] == name)[-1]
    with p._mesh():
        if name == "prefill":
            args = (np.zeros((1, s[1]), np.int32), np.zeros(1, np.int32), np.ones(1, np.int32))
            yield (
                p._prefill.lower(eng.program_params(), eng.cache, *args, np.zeros((1, s[2]), np.int32))
                .compile()
                .as_text()
            )
        else:
            rows = {k: np.zeros(s[1], np.int32) for k in ("last", "length", "step", "top_k")}
            rows.update(max_step=np.ones(s[1], np.int32), seed=np.zeros(s[1], np.uint32), active=np.ones(s[1], bool))
            rows.update(temperature=np.zeros(s[1], np.float32), top_p=np.ones(s[1], np.float32))
            rows.update(ignore_eos=np.zeros(s[1], bool))
            table = np.zeros((s[1], s[2]), np.int32)
            limit = {"steps": np.int32(4), "exit_on_end": np.bool_(False)}
            yield p._decode.lower(eng.program_params(), eng.cache, rows, table, limit).compile().as_text()


def test_tensor_is_resolved_and_bad_values_are_named(kv2, kv4):
    m2, m4 = load_for_inference(kv2[1]).cfg, load_for_inference(kv4[1]).cfg
    assert resolve_tensor(-1, m2, 8) == 2 and resolve_tensor(-1, m4, 8) == 4 and resolve_tensor(-1, m4, 3) == 2
    with pytest.raises(ConfigError, match=r"engine.tensor=3 does not divide the model's 2 kv heads"):
        resolve_tensor(3, m2, 8)
    with pytest.raises(ConfigError, match=r"engine.tensor=16: this host has 8 device"):
        resolve_tensor(16, m4, 8)
    with pytest.raises(ConfigError, match=r"engine.tensor must be >= 1 or -1"):
        EngineConfig(tensor=0).validate()
    eng = _engine(kv4[1], -1, "xla", num_slots=1)
    assert eng.placement.tensor == 4 and len(eng.cache["k"].sharding.device_set) == 4
    assert len(jax.local_devices()) == 8


def test_kv_budget_is_per_device(kv2):
    """The engine sizes its cache per device: with T devices a page costs each 1/T of its bytes (infer/sizing)."""
    _, ckpt = kv2
    one, two = _engine(ckpt, 1, "xla", num_slots=2), _engine(ckpt, 2, "xla", num_slots=2)
    assert one.num_pages == two.num_pages == 2 * one.max_pages_per_seq + 1  # host RAM: every wanted page
    with pytest.raises(InputError, match="raise engine.tensor"):
        _engine(ckpt, 2, "xla", num_slots=2, kv_memory_fraction=1e-12)


def test_checkpoints_load_straight_onto_the_engine_devices(kv2, tmp_path):
    """load_for_inference(tensor=T) reads a full checkpoint, and merges an adapter (LoRA) checkpoint onto its
    base, already split over the T devices: the same values as on one device, and the engine copies nothing."""
    import shutil

    from mathjax_train.config import LoraConfig
    from mathjax_train.model import checkpoint as ckpt
    from mathjax_train.model.lora import abstract_trees, save_adapter_meta

    _, base = kv2
    one = load_for_inference(base)
    lora = LoraConfig(rank=2, targets=["q_proj", "v_proj", "down_proj"])
    adapters, _ = abstract_trees(one.cfg, lora)
    rng = np.random.RandomState(0)
    adapter_dir = tmp_path / "adapter"
    ckpt.save_params(adapter_dir, jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(s.dtype), adapters))
    ckpt.save_model_config(adapter_dir, ckpt.load_model_config(base))
    shutil.copytree(ckpt.resolve(base).tokenizer_dir, adapter_dir / ckpt.TOKENIZER_DIR)
    save_adapter_meta(adapter_dir, str(base), lora)
    for path in (base, adapter_dir):
        ref, split = load_for_inference(path), load_for_inference(path, tensor=2)
        for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(split.params)):
            assert len(b.sharding.device_set) == 2
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
        before = split.params
        Engine(split, EngineConfig(tensor=2, num_slots=1, num_pages=8, **SMALL))
        assert split.params is before
    merged = load_for_inference(adapter_dir).params["layers"]["self_attn"]["q_proj"]["kernel"]
    assert not np.allclose(merged, one.params["layers"]["self_attn"]["q_proj"]["kernel"])  # the adapter counts
