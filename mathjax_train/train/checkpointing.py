"""Training checkpoints: Orbax CheckpointManager under OUTPUT_DIR/checkpoints.

Each step directory holds three items: `params` (the same Orbax layout as a model checkpoint,
so a step directory is itself loadable by generate/evaluate/export-hf; in a LoRA run only the
adapters, with OUTPUT_DIR/adapter.json naming the base), `train_state` (step,
optimizer state, RNG) and `meta` (JSON: step, data iterator state). Orbax writes a step into a
temporary directory and renames it only when complete, so a crash mid-save never becomes the
latest step. The model config and tokenizer are written once at OUTPUT_DIR's top level.
"""

from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from etils import epath

from mathjax_train.config import CheckpointConfig
from mathjax_train.model.checkpoint import CHECKPOINTS_DIR, absolute

ITEMS = ("params", "train_state", "meta")


class TrainCheckpointer:
    """Save/restore the train state and data iterator position, async by default."""

    def __init__(self, output_dir, cfg: CheckpointConfig):
        self.directory = absolute(epath.Path(output_dir) / CHECKPOINTS_DIR)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep,
            save_interval_steps=1,
            create=True,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=cfg.async_save,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: dict, data_state, *, wait: bool = False) -> None:
        step = int(jax.device_get(state["step"]))
        train_state = {"step": state["step"], "opt_state": state["opt_state"], "rng": state["rng"]}
        meta = {"step": step, "data_state": data_state}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state["params"]),
                train_state=ocp.args.StandardSave(train_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        if wait:
            self.manager.wait_until_finished()

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
        """State laid out like `abstract_state` (ShapeDtypeStructs with shardings) and the meta dict."""
        abstract_ts = {k: abstract_state[k] for k in ("step", "opt_state", "rng")}
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state["params"]),
                train_state=ocp.args.StandardRestore(abstract_ts),
                meta=ocp.args.JsonRestore(),
            ),
        )
        state = dict(out["train_state"], params=out["params"])
        return state, dict(out["meta"])

    def reached_preemption(self, step: int) -> bool:
        """Multi-host agreement that a preemption notice arrived (all hosts answer the same)."""
        return self.manager.reached_preemption(step)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
