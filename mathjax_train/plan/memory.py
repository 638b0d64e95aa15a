"""Per-device memory of a training step, analytically, from the config and the sharding rules.

Parameters and optimizer state are exact: the trainer's own state layout (train/state.py) is built on
an abstract mesh of the slice's shape and each array's shard is summed. The rest is an estimate:

- gradients: the parameters' bytes again (float32 like them), twice with micro-batches (the
  accumulator plus the current micro-batch's gradient).
- activations, for T = tokens per device per micro-batch, a = bytes of the compute dtype, e hidden,
  m mlp, h / kv heads of size d, V vocab, L layers, th / tm / tv the shards of heads / mlp / vocab:
    X  = a e                                   a layer's input (the scan carry), always kept
    MM = a (2e + (2h + 2kv) d/th + 2m/tm)       matmul outputs: q, k, v, attention out, o_proj, gate, up, down
         + a (r n + I)                         LoRA of rank r on n projections: each adapter's A x, and with
                                               lora.dropout > 0 its dropped-out input (I: the targets' inputs)
    EW = a (2e + (h + kv) d/th + m/tm) + 8e     norm outputs, rotated q/k, silu(gate)*up, float32 norm inputs
         + Q, Q = a (h + kv) d/th with qk_norm    the normed q/k (Qwen3; estimated, not measured on XLA:TPU);
         with sandwich_norms (Gemma) 4e and 16e for the four norms (estimated, not measured on XLA:TPU)
    SC = (h/th) s (4 + a) for `dot` (scores in float32 and probabilities), 4 h/th for `splash` (log-sum-exp)
  kept per layer, as XLA:TPU (libtpu 0.0.42.1) lays the step out (its buffer assignment for the LLaMA-2-7B,
  Mistral-7B, Qwen2-7B and Qwen2.5-1.5B recipes): none a (6m/tm + 2e + (3h + 2kv) d/th) + 16e + SC (SwiGLU's
  six m-wide tensors, four float32 copies of the residual stream, q and attention out twice, k and v) + LoRA;
  dots and dots_with_no_batch_dims a (2m/tm + 2e + (h + 2kv) d/th) + LoRA (the saved projections: q, k, v,
  o_proj, gate and up), with `dots` also a (h/th) s scores for `dot`; full X; with qk_norm, none keeps Q
  more (q and k before and after their norm); plus
  one layer's full set X+MM+EW+SC live while it is (re)computed in the
  backward pass; plus the head: with full logits (train.loss_vocab_chunk off) (8 + a) V/tv + 2 a e (float32
  logits and their gradient, the logits in the compute dtype; normed hidden states and their gradient; rl's
  update over token log-probabilities keeps one float32 copy: 4 V/tv + 2 a e), with the vocabulary
  chunked in n chunks of c the same for one chunk, 12 c/tv + (2a + 8) e + 20 n (the hidden states also in
  float32 with their float32 gradient, the scan's five float32 carries per chunk), and per device the
  chunk-major copy of the head weight and its gradient, 2 a e n c/tv;
  plus all-gathered weights (FSDP): two layers, the embedding and the output head in the compute dtype;
  with experts (mixture of experts, k of E per token, each m_x wide) m above is k m_x (the rows each token
  sends through its experts) and MM adds 2 a k e (the token copies sorted by expert, in and out), and a
  layer's gathered experts are its share of the `expert` axis;
  plus the chip's shard of the parameters cast to the compute dtype (`cast_bytes`).
  activations = T (L kept + live + head) + head weights + gathered + cast.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType

from mathjax_train.config import Config, ConfigError, ModelConfig
from mathjax_train.parallel.mesh import MESH_AXES, resolve_shape
from mathjax_train.parallel.rules import axis_rules
from mathjax_train.train.optimizer import make_optimizer
from mathjax_train.train.state import state_layout

USABLE_HBM_FRACTION = 0.9  # XLA's reserved space, the runtime and fragmentation take the rest


@dataclass
class MeshPlan:
    shape: dict[str, int]
    rules: tuple
    batch_shards: int
    rows_per_device: int  # sequences per device per micro-batch

    def shards(self, logical: str) -> int:
        """How many ways the rules split a dimension named `logical`."""
        names = nn.logical_to_mesh_axes((logical,), self.rules)
        assert names is not None  # flax gives None only for names=None
        spec = names[0]
        axes = () if spec is None else ((spec,) if isinstance(spec, str) else tuple(spec))
        return math.prod(self.shape[a] for a in axes)


def plan_mesh(cfg: Config, chips: int) -> MeshPlan:
    """The mesh the trainer would build on `chips` devices, and how the batch splits over it."""
    shape = dict(zip(MESH_AXES, resolve_shape(cfg.mesh, chips)))
    rules = axis_rules(cfg.mesh.rules)
    mp = MeshPlan(shape, rules, 1, 0)
    mp.batch_shards = mp.shards("batch")
    rows = cfg.train.batch_size // cfg.train.microbatches
    if rows % mp.batch_shards:
        raise ConfigError(
            f"train.batch_size / train.microbatches = {rows} rows per micro-batch cannot be split "
            f"over the {mp.batch_shards} batch shards of mesh {shape}"
        )
    mp.rows_per_device = rows // mp.batch_shards
    return mp


def abstract_mesh(shape: dict[str, int]) -> AbstractMesh:
    """A device-free mesh of `shape` (mesh axis -> size); an axis it leaves out has size 1."""
    return AbstractMesh(
        tuple(shape.get(a, 1) for a in MESH_AXES), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES)
    )


def local_bytes(tree) -> int:
    """Bytes of one device's shards of a tree of arrays (or ShapeDtypeStructs) that carry shardings."""
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def _count(tree, skip=()) -> int:
    flat = jax.tree_util.tree_leaves_with_path(tree)
    return sum(math.prod(x.shape) for path, x in flat if getattr(path[-1], "key", None) not in skip)


def state_bytes(cfg: Config, model_cfg: ModelConfig, mp: MeshPlan) -> dict:
    """Exact per-device bytes of the trained parameters, the frozen base (LoRA) and the optimizer state
    (the trainer's layout); `param_count` is the model's, `trainable_count` what the optimizer updates."""
    tx, _ = make_optimizer(cfg.optimizer, cfg.train.steps)
    lora = cfg.lora if cfg.lora.enabled else None
    layout = state_layout(model_cfg, tx, abstract_mesh(mp.shape), mp.rules, lora)
    params, base = layout.abstract["params"], layout.abstract.get("base", {})
    trainable = _count(params)
    count = _count(base, skip=("kernel_scale",)) if lora else trainable
    in_experts = lambda path, _: any(getattr(k, "key", None) == "experts" for k in path)  # noqa: E731
    experts = jax.tree_util.tree_map_with_path(lambda p, x: x if in_experts(p, x) else None, base or params)
    return {
        "param_count": count,
        "expert_params": local_bytes(experts),  # the stacked expert weights' shard on a device (0 if dense)
        "trainable_count": trainable,
        "params": local_bytes(params),
        "frozen_base": local_bytes(base),
        "optimizer_state": local_bytes(layout.abstract["opt_state"]),
    }


def layer_param_count(m: ModelConfig, expert_shards: int = 1) -> int:
    """One layer's parameters; with experts, the router and 1 / `expert_shards` of the experts."""
    e, d = m.hidden_size, m.resolved_head_dim
    qk_norm = 2 * d if m.qk_norm else 0
    norms = (4 if m.sandwich_norms else 2) * e  # Gemma's sandwich adds a norm after attention and after the MLP
    ffn = 3 * e * m.intermediate_size
    if m.num_experts:
        ffn = e * m.num_experts + m.num_experts * 3 * e * m.moe_intermediate_size // expert_shards
    return e * d * (2 * m.num_heads + 2 * m.num_kv_heads) + ffn + norms + qk_norm


def activation_terms(cfg: Config, m: ModelConfig, mp: MeshPlan, learner: bool = False) -> dict:
    """The terms of the activation estimate (bytes per device); see the module docstring. `learner`: rl's
    update, whose loss over token log-probabilities keeps one float32 copy of the full logits."""
    a = jnp.dtype(m.dtype).itemsize
    e, mlp, h, kv, d, V, L = (
        m.hidden_size,
        m.intermediate_size,
        m.num_heads,
        m.num_kv_heads,
        m.resolved_head_dim,
        m.vocab_size,
        m.num_layers,
    )
    s = cfg.train.seq_len
    th, tm, tv = mp.shards("heads"), mp.shards("mlp"), mp.shards("vocab")
    T = mp.rows_per_device * s
    X = a * e
    dispatch = 0.0
    if m.num_experts:
        mlp, dispatch = m.num_experts_per_tok * m.moe_intermediate_size, 2 * a * m.num_experts_per_tok * e
    MM = a * (2 * e + (2 * h + 2 * kv) * d / th + 2 * mlp / tm) + lora_terms(cfg, a, e, mlp, h, kv, d, th, tm)
    MM += dispatch
    Q = a * (h + kv) * d / th if m.qk_norm else 0.0
    n = 4 if m.sandwich_norms else 2  # norms per layer (Gemma's sandwich: four)
    EW = a * (n * e + (h + kv) * d / th + mlp / tm) + 4 * n * e + Q
    SC = (h / th) * s * (4 + a) if m.attention_kernel == "dot" else 4 * h / th
    lora = lora_terms(cfg, a, e, mlp, h, kv, d, th, tm)
    saved = a * (2 * mlp / tm + 2 * e + (h + 2 * kv) * d / th) + lora  # the dots policies' projections
    kept = {
        "none": a * (6 * mlp / tm + 2 * e + (3 * h + 2 * kv) * d / th) + 16 * e + SC + lora + Q,
        "dots": saved + (a * (h / th) * s if m.attention_kernel == "dot" else 0),
        "dots_with_no_batch_dims": saved,
        "full": X,
    }[m.remat_policy]
    live = X + MM + EW + SC
    head, head_weights = head_terms(a, e, V, tv, cfg.train.vocab_chunk(V))
    if learner:
        head = 4 * V / tv + 2 * a * e
    layer = layer_param_count(m, mp.shards("expert"))
    gathered = a * (2 * layer / max(th, 1) + (1 if m.tie_embeddings else 2) * V * e / tv)
    return {
        "tokens_per_device": T,
        "kept_per_layer": T * kept,
        "layers": T * L * kept,
        "live_layer": T * live,
        "head": T * head + head_weights,
        "gathered_weights": gathered,
        "total": T * (L * kept + live + head) + head_weights + gathered,
    }


def lora_terms(cfg: Config, a, e, mlp, h, kv, d, th, tm) -> float:
    """Bytes per token per layer the adapters keep for the backward pass (module docstring)."""
    lora = cfg.lora
    if not lora.enabled:
        return 0.0
    inputs = {
        "q_proj": e,
        "k_proj": e,
        "v_proj": e,
        "o_proj": h * d / th,
        "gate_proj": e,
        "up_proj": e,
        "down_proj": mlp / tm,
    }
    dropped = sum(inputs[t] for t in lora.targets) if lora.dropout > 0 else 0
    return a * (lora.rank * len(lora.targets) + dropped)


def head_terms(a: int, e: int, V: int, tv: int, chunk: int) -> tuple[float, float]:
    """The loss head's bytes per token and per device (module docstring); chunk 0 = full logits."""
    if not chunk:
        return (8 + a) * V / tv + 2 * a * e, 0.0
    n = math.ceil(V / chunk)
    return 12 * chunk / tv + (2 * a + 8) * e + 20 * n, 2 * a * e * n * chunk / tv


def analytic_memory(cfg: Config, model_cfg: ModelConfig, mp: MeshPlan, learner: bool = False) -> dict:
    """Per-device bytes: params (trained), frozen_base (LoRA), optimizer_state, gradients (of the
    trained params only), activations, total (+ param_count, trainable_count). `learner`: rl's update
    (activation_terms)."""
    st = state_bytes(cfg, model_cfg, mp)
    grads = st["params"] * (2 if cfg.train.microbatches > 1 else 1)
    act = activation_terms(cfg, model_cfg, mp, learner)
    act["weights_cast"] = cast_bytes(model_cfg, st["params"])
    act["total"] += act["weights_cast"]
    total = st["params"] + st["frozen_base"] + st["optimizer_state"] + grads + act["total"]
    return {**st, "gradients": grads, "activations": act["total"], "activation_terms": act, "total": total}


def cast_bytes(m: ModelConfig, params: int) -> float:
    """The chip's shard of the trained parameters cast once to the compute dtype before the layers' loop
    (XLA:TPU hoists the cast out of the scan)."""
    p, a = jnp.dtype(m.param_dtype).itemsize, jnp.dtype(m.dtype).itemsize
    return 0.0 if p == a else params * a / p


def learner_config(cfg: Config) -> Config:
    """The `rl` learner as a train config: each update is one minibatch of B x G / rl.minibatches rows of
    train.seq_len (no accumulation), with full logits (rl/learner.py takes log-probabilities and entropy
    from the full logits)."""
    rows = cfg.rl.prompts_per_step * cfg.rl.group_size
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, batch_size=rows // cfg.rl.minibatches, microbatches=1, loss_vocab_chunk=0),
    )


def rl_engine_pages(cfg: Config, model_cfg: ModelConfig, hosts: int) -> tuple[int, int]:
    """(slots, KV pages) of one host's `rl` engine: rl.engine_slots, and rl.engine.num_pages or every slot's pages
    for a sequence of train.seq_len + 1 tokens."""
    slots = cfg.rl.engine_slots(hosts)
    max_seq_len = min(cfg.train.seq_len + 1, model_cfg.max_position_embeddings)
    return slots, cfg.rl.engine.num_pages or slots * math.ceil(max_seq_len / cfg.rl.engine.page_size) + 1


def rl_extra_memory(cfg: Config, model_cfg: ModelConfig, mp: MeshPlan, learner: dict, tensor: int, hosts: int) -> dict:
    """Per-device bytes `rl` adds to its learner (laid out by `mp`; `learner`: analytic_memory's) on the chips of
    a host's engine (rl.engine.tensor = `tensor` of them, resolved): the engine's parameters, the learner's
    resharded to (1, 1, tensor) by rl/reshard.py (none when the learner's layout already is the engine's), the
    decoding copy of a tied head, the engine's paged KV cache split by kv heads (rl.engine.num_pages, or one
    sequence of train.seq_len + 1 tokens per slot, slots = B x G / `hosts` by default) and, with
    rl.kl_coef > 0, the frozen reference (sharded like the policy). `reshard_peak`: the chip while the
    hand-over runs (no gradients or activations then; the engine's previous parameters dropped before it), with
    `reshard_temp`, the largest parameter array whole: XLA:TPU moves each array from the learner's layout to the
    engine's through a full copy of it on every chip (its SPMD partitioner's "involuntary full
    rematerialization"; the compiled reshard of the RL recipes holds that much in temporaries)."""
    from mathjax_train.model import page_bytes
    from mathjax_train.model.checkpoint import boxed_params
    from mathjax_train.parallel.rules import logical_shardings

    eng = cfg.rl.engine
    slots, pages = rl_engine_pages(cfg, model_cfg, hosts)
    kv = pages * page_bytes(model_cfg, eng.page_size) // tensor
    engine_mesh = abstract_mesh({"data": 1, "fsdp": 1, "tensor": tensor})

    def engine_bytes(m: ModelConfig) -> dict:
        boxed = boxed_params(m)
        shardings = logical_shardings(boxed, engine_mesh, axis_rules())
        tree = jax.tree_util.tree_map(
            lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), nn.meta.unbox(boxed), shardings
        )
        return {k: local_bytes(v) for k, v in tree.items()}

    own = engine_bytes(model_cfg)
    untied = engine_bytes(dataclasses.replace(model_cfg, tie_embeddings=False)) if model_cfg.tie_embeddings else own
    decode_copy = sum(v for k, v in untied.items() if k not in own)
    in_place = mp.shape == {"data": 1, "expert": 1, "fsdp": 1, "tensor": tensor} and mp.rules == axis_rules()
    engine_params = 0 if in_place else sum(own.values())
    whole = nn.meta.unbox(boxed_params(model_cfg))
    temp = max(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(whole))
    reference = learner["params"] if cfg.rl.kl_coef > 0 else 0
    state = learner["params"] + learner["optimizer_state"]
    alive = kv + reference + engine_params + decode_copy
    return {
        "kv_pages": pages,
        "kv_slots": slots,
        "kv_cache": kv,
        "engine_tensor": tensor,
        "hosts": hosts,
        "engine_params": engine_params,
        "decode_copy": decode_copy,
        "reference": reference,
        "reshard_temp": temp if engine_params else 0,
        "reshard_peak": state + alive + temp if engine_params else 0,
        "total": alive,
    }
