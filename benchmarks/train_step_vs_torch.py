"""Train-step throughput: our jitted step vs PyTorch transformers (LlamaForCausalLM + AdamW).

    python benchmarks/train_step_vs_torch.py [--layers 8] [--d-model 512] [--seq 512] [--batch 4] [--steps 5]
    python benchmarks/train_step_vs_torch.py --dtype bfloat16 --layers 16 --d-model 2048 ...  # on a GPU
    python benchmarks/train_step_vs_torch.py --loss-vocab-chunk 4096  # our loss over vocabulary chunks

The same LLaMA-shaped model (SwiGLU, RMSNorm, RoPE) on both sides, the same token batch (every
token a target), AdamW with the same hyperparameters, on the first accelerator when there is one
(else the CPU). float32: everything fp32. bfloat16: fp32 master weights with bf16 compute on both
sides (ours: model.dtype; torch: autocast). Each side does one warm-up step (our compile time is
reported separately), then timed steps alternate between the two so machine noise hits both. MFU
uses one FLOP count for both (train/flops.py: 6 x matmul params + attention) and the device's
peak (the table for accelerators, a measured matmul on CPU). Prints JSON with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=0, help="0: as many as --heads")
    ap.add_argument("--mlp", type=int, default=1408)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-scan", action="store_true", help="unrolled layers instead of nn.scan")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    ap.add_argument(
        "--kernel",
        default=None,
        help="our model.attention_kernel (default: the config's; blocked | dot | cudnn on GPUs)",
    )
    ap.add_argument("--remat", default="none", help="our model.remat_policy; torch: gradient checkpointing when full")
    ap.add_argument(
        "--loss-vocab-chunk",
        type=int,
        default=-1,
        help="our train.loss_vocab_chunk: -1 auto (full logits at 32k), 0 full logits, N chunks of N ids",
    )
    args = ap.parse_args()

    import jax
    import numpy as np
    import torch
    import transformers

    from machine import cpu_description
    from mathjax_train.config import load_config
    from mathjax_train.train.flops import peak_flops_per_device, train_flops_per_token
    from mathjax_train.train.setup import build_step

    kv_heads = args.kv_heads or args.heads
    cfg = load_config(
        None,
        [
            f"model.vocab_size={args.vocab}",
            f"model.hidden_size={args.d_model}",
            f"model.intermediate_size={args.mlp}",
            f"model.num_layers={args.layers}",
            f"model.num_heads={args.heads}",
            f"model.num_kv_heads={kv_heads}",
            f"model.dtype={args.dtype}",
            f"model.scan_layers={not args.no_scan}",
            f"model.remat_policy={args.remat}",
            *([f"model.attention_kernel={args.kernel}"] if args.kernel else []),
            f"train.batch_size={args.batch}",
            f"train.seq_len={args.seq}",
            f"train.loss_vocab_chunk={args.loss_vocab_chunk}",
            "optimizer.learning_rate=1e-4",
            "optimizer.warmup_steps=0",
            "optimizer.schedule=constant",
            "optimizer.weight_decay=0.0",
            "optimizer.grad_clip_norm=0",
            "mesh.data=1",
        ],
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, args.vocab, (args.batch, args.seq + 1)).astype(np.int32)
    batch = {
        "tokens": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "positions": np.broadcast_to(np.arange(args.seq, dtype=np.int32), (args.batch, args.seq)).copy(),
        "segment_ids": np.ones((args.batch, args.seq), np.int32),
        "loss_weights": np.ones((args.batch, args.seq), np.float32),
    }

    setup = build_step(cfg, devices=jax.devices()[:1])
    mesh, bsh, step = setup.mesh, setup.batch_sharding, setup.step
    state = setup.init_state(0)
    gbatch = jax.device_put(batch, bsh)

    def ours():
        nonlocal state
        with jax.set_mesh(mesh):
            state, m = step(state, gbatch)
        return float(m["loss"])

    t = time.perf_counter()
    ours()
    compile_s = time.perf_counter() - t

    hf_cfg = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.d_model,
        intermediate_size=args.mlp,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=args.seq,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.LlamaForCausalLM(hf_cfg).float().to(dev).train()
    if args.remat == "full":
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    ids = torch.tensor(tokens[:, :-1], dtype=torch.long, device=dev)
    labels = torch.tensor(tokens[:, 1:], dtype=torch.long, device=dev)

    def theirs():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16"):
            logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, args.vocab), labels.reshape(-1))
        loss.backward()
        opt.step()
        return float(loss)  # waits for the device

    theirs()  # warm-up
    ours_s, theirs_s = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        ours()
        ours_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs()
        theirs_s.append(time.perf_counter() - t)

    tokens_per_step = args.batch * args.seq
    flops = train_flops_per_token(cfg.model, args.seq)
    peak = peak_flops_per_device(jax.devices()[0], dtype=args.dtype)
    o, h = tokens_per_step / statistics.median(ours_s), tokens_per_step / statistics.median(theirs_s)
    print(
        json.dumps(
            {
                "model": f"llama {args.layers}L d{args.d_model} mlp{args.mlp} vocab{args.vocab}",
                "seq": args.seq,
                "batch": args.batch,
                "dtype": args.dtype,
                "remat": args.remat,
                "loss_vocab_chunk": cfg.train.vocab_chunk(args.vocab),
                "attention_kernel": cfg.model.attention_kernel,
                "device": jax.devices()[0].device_kind,
                "machine": cpu_description(),
                "torch_device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                "torch_threads": torch.get_num_threads(),
                "jax": jax.__version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "ours_tokens_per_s": round(o, 1),
                "torch_tokens_per_s": round(h, 1),
                "ratio_ours_over_torch": round(o / h, 2),
                "ours_mfu": round(o * flops / peak, 4),
                "torch_mfu": round(h * flops / peak, 4),
                "peak_tflops": round(peak / 1e12, 1),
                "params": sum(p.numel() for p in model.parameters()),
                "ours_compile_and_first_step_s": round(compile_s, 1),
                "ours_step_s": [round(x, 2) for x in ours_s],
                "torch_step_s": [round(x, 2) for x in theirs_s],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
