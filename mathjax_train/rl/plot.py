"""OUTPUT_DIR/reward_curve.png: the sampled pass rate per step and the held-out accuracy (with its 95%
interval) at each evaluation, drawn from metrics.jsonl and the summary (matplotlib's Agg backend)."""

from __future__ import annotations

import json

from etils import epath

PLOT_FILE = "reward_curve.png"


def plot_reward_curve(out: epath.Path, summary: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mathjax_train.eval.metrics import binomial_interval

    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r["pass_rate"] for r in rows], label="sampled pass rate (T=1)", lw=1)
    held = sorted((int(k), v) for k, v in summary["heldout"].items())
    if held:
        xs, ys = [k for k, _ in held], [v["accuracy"] for _, v in held]
        lo_hi = [binomial_interval(v["correct"], v["problems"]) for _, v in held]
        ax.errorbar(
            xs,
            ys,
            yerr=[[y - lo for y, (lo, _) in zip(ys, lo_hi)], [hi - y for y, (_, hi) in zip(ys, lo_hi)]],
            fmt="o-",
            capsize=3,
            label=f"held-out accuracy (greedy, n={held[0][1]['problems']})",
        )
    ax.set_xlabel("RL step")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = out / PLOT_FILE
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
    return str(path)
