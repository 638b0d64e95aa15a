"""Every TPU recipe's train step traces and lowers with its own mesh and shardings, on as many fake CPU
devices as its slice has chips (at 2 layers; nothing is allocated); RL recipes too, whose learner runs
the same model under the same mesh. `plan --compile` goes on to compile
it (tests/test_plan.py does so for one recipe: a 7B compile takes tens of seconds)."""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from mathjax_train.config import load_config
from mathjax_train.parallel.topology import parse_topology
from mathjax_train.pipeline.spec import is_pipeline_file

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(
    str(p) for p in CONFIGS.glob("*.yaml") if not is_pipeline_file(str(p)) and load_config(str(p)).mesh.topology
)

CHILD = """
import json, sys
from mathjax_train.config import load_config
from mathjax_train.plan.aot import lower_step
out = {}
for path in sys.argv[1:]:
    try:
        text = lower_step(load_config(path), 2).as_text()
        out[path] = {"ok": True, "hlo_chars": len(text)}
    except Exception as e:  # reported per recipe by the test
        out[path] = {"ok": False, "error": f"{type(e).__name__}: {e}"[-2000:]}
print(json.dumps(out))
"""


def _env(chips: int) -> dict:
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={chips}",
    )
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def test_every_tpu_recipe_lowers_on_its_slice():
    assert len(RECIPES) >= 15
    by_chips = defaultdict(list)
    for path in RECIPES:
        by_chips[parse_topology(load_config(path).mesh.topology).chips].append(path)
    results = {}
    groups = sorted(by_chips.items(), key=lambda kv: -len(kv[1]))
    for pair in (groups[i : i + 2] for i in range(0, len(groups), 2)):  # two children at a time (2 cores)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, *paths],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_env(chips),
            )
            for chips, paths in pair
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            results.update(json.loads(out.strip().splitlines()[-1]))
    failed = {Path(p).name: r["error"] for p, r in results.items() if not r["ok"]}
    assert not failed, failed
    assert set(results) == set(RECIPES) and all(r["hlo_chars"] > 10_000 for r in results.values())
