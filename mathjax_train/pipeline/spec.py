"""A pipeline file: `run_dir` and named `stages` in order, each `kind` plus its typed config.

A stage names its inputs as outputs of earlier stages with `${stages.NAME.OUTPUT}` (and may use
`${run_dir}`); references, kinds and every field are checked when the file is loaded, and errors
name the file, the stage and the field. A training mapping (a `train` or `rl` stage, `scaling.train`) may
start from `base: FILE` or a list of files (training config YAMLs, relative to the pipeline file; their output_dir is
replaced by the stage's directory) and override it.
Overrides: `run_dir=DIR`, `stages.NAME.FIELD.SUB=VALUE`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from etils import epath

from mathjax_train.config import (
    AugmentJobConfig,
    Config,
    ConfigError,
    DecontaminateConfig,
    EvaluateStageConfig,
    ExportStageConfig,
    ProblemsStageConfig,
    RftConfig,
    ScalingStageConfig,
    SelectConfig,
    TokenizerStageConfig,
    apply_override,
    from_dict,
    is_remote,
    merge_mappings,
    read_bases,
    read_yaml_mapping,
    to_dict,
)


@dataclass(frozen=True)
class Kind:
    """A stage kind: its config class and the outputs later stages may reference (name -> path
    under the stage directory; "" = the directory itself)."""

    cls: type
    outputs: dict[str, str]


KINDS: dict[str, Kind] = {
    "tokenizer": Kind(TokenizerStageConfig, {"dir": ""}),
    "problems": Kind(ProblemsStageConfig, {"problems": "problems.jsonl"}),
    "train": Kind(Config, {"checkpoint": ""}),
    "rl": Kind(Config, {"checkpoint": ""}),  # the training config with its `rl` section; init_from: a checkpoint
    "sample": Kind(RftConfig, {"samples": "samples.jsonl"}),
    "augment": Kind(AugmentJobConfig, {"output": "augmented.jsonl"}),  # + report.json (timings: not hashed)
    "decontaminate": Kind(DecontaminateConfig, {"output": "clean.jsonl", "report": "report.json"}),
    "select": Kind(SelectConfig, {"output": "selected.jsonl"}),
    "evaluate": Kind(EvaluateStageConfig, {"dir": ""}),
    "scaling": Kind(ScalingStageConfig, {"fit": "fit.json", "plot": "scaling.png"}),  # + checkpoint (largest size)
    "export": Kind(ExportStageConfig, {"hf_dir": "hf"}),
}
ALIASES = {"sft": "train", "rft": "sample"}
TRAINING_KINDS = ("train", "rl")  # a training Config: `base:` files, output_dir = the stage directory
_REF = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_META = ("kind", "base")


@dataclass
class Stage:
    name: str
    kind: str
    cfg: Any  # the kind's dataclass, references resolved and owned paths filled in
    dir: str
    outputs: dict[str, str]  # referenceable outputs: name -> path
    uses: dict[str, str] = field(default_factory=dict)  # field path -> the earlier stage it references

    def config_dict(self) -> dict:
        return to_dict(self.cfg)

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config_dict(), sort_keys=True).encode()).hexdigest()


@dataclass
class Pipeline:
    source: str
    run_dir: str
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def join_path(root: str, *parts: str) -> str:
    """`root/part/...` as a string, for local paths and gs:// alike (empty parts skipped)."""
    parts = tuple(p for p in parts if p)
    return posixpath.join(root, *parts) if is_remote(root) else str(epath.Path(root).joinpath(*parts))


def _with_base(section: dict, source: str, where: str) -> dict:
    """A training mapping on top of its `base:` files (relative to the pipeline file)."""
    section = dict(section)
    base = section.pop("base", None)
    if base is None:
        return section
    data = read_bases(base, source, f"{source}: {where}")
    data.pop("output_dir", None)  # the stage's own directory replaces the base run's
    return merge_mappings(data, section)


def _unshared(node: Any) -> Any:
    """A copy in which no two places share a mapping or list (YAML anchors alias them; an override of
    one stage must not change another)."""
    if isinstance(node, dict):
        return {k: _unshared(v) for k, v in node.items()}
    return [_unshared(v) for v in node] if isinstance(node, list) else node


def _read(path: str) -> dict:
    data = read_yaml_mapping(path, f"{path}")
    if not isinstance(data.get("stages"), dict) or not data["stages"]:
        raise ConfigError(
            f"{path}: a pipeline file needs a `stages` mapping (name -> stage); see configs/pipeline_*.yaml"
        )
    unknown = [k for k in data if k not in ("run_dir", "stages")]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: run_dir, stages")
    return data


def is_pipeline_file(path: str) -> bool:
    """Whether a YAML file is a pipeline (top-level `stages`) rather than a training config."""
    try:
        data = yaml.safe_load(epath.Path(path).read_text())
    except (FileNotFoundError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "stages" in data


def kind_of(raw: dict, source: str, name: str) -> str:
    kind = raw.get("kind")
    if isinstance(kind, str):
        kind = ALIASES.get(kind, kind)
    if not isinstance(kind, str) or kind not in KINDS:  # a list or mapping is unhashable: check the type first
        raise ConfigError(
            f"{source}: stages.{name}.kind: {raw.get('kind')!r} is not one of {', '.join(list(KINDS) + list(ALIASES))}"
        )
    return kind


def _override(data: dict, override: str, source: str) -> None:
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not parts[0]:
        raise ConfigError(f"override {override!r}: expected key=value")
    if parts == ["run_dir"]:
        data["run_dir"] = value
        return
    if parts[0] != "stages" or len(parts) < 3:
        raise ConfigError(f"override {override!r}: expected run_dir=... or stages.NAME.FIELD=...")
    name = parts[1]
    if name not in data["stages"]:
        raise ConfigError(f"override {override!r}: no stage {name!r}; stages: {', '.join(data['stages'])}")
    stage = data["stages"][name]
    if parts[2] in _META:
        raise ConfigError(f"override {override!r}: {parts[2]} cannot be overridden")
    cls = KINDS[kind_of(stage, source, name)].cls
    try:
        apply_override(stage, cls, f"{'.'.join(parts[2:])}={value}")
    except ConfigError as e:
        raise ConfigError(f"stages.{name}: {e}") from None


def _resolve_refs(node: Any, resolve, where: str) -> Any:
    if isinstance(node, dict):
        return {k: _resolve_refs(v, resolve, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(v, resolve, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return _REF.sub(lambda m: resolve(m.group(1).strip(), where), node)
    return node


def _set_owned(cfg: Any, dotted: str, value: Any, where: str) -> None:
    *path, last = dotted.split(".")
    node = cfg
    for p in path:
        node = getattr(node, p)
    default = next(f for f in dataclasses.fields(node) if f.name == last)
    empty = default.default_factory() if default.default_factory is not dataclasses.MISSING else default.default
    if getattr(node, last) not in (empty, value):
        raise ConfigError(f"{where}.{dotted}: set by the pipeline (the stage's own directory); leave it out")
    setattr(node, last, value)


def _owned_values(kind: str, stage_dir: str) -> dict[str, Any]:
    """The fields the pipeline fills in (the stage's own paths); a file must leave them out."""
    if kind in TRAINING_KINDS:
        return {"output_dir": stage_dir}
    if kind == "sample":
        return {"output": join_path(stage_dir, KINDS["sample"].outputs["samples"])}
    if kind == "augment":
        return {
            "output": join_path(stage_dir, KINDS["augment"].outputs["output"]),
            "report": join_path(stage_dir, "report.json"),
        }
    if kind == "scaling":  # per size, replaced when the stage runs; placeholders keep validation honest
        return {
            "train.output_dir": join_path(stage_dir, "size"),
            "train.data.jsonl": [],
            "eval.checkpoint": "",
            "eval.output_dir": "",
        }
    return {"eval.checkpoint": "", "eval.output_dir": ""} if kind == "evaluate" else {}


def load_pipeline(path: str, overrides: list[str] | tuple[str, ...] = ()) -> Pipeline:
    """Read, override, resolve references and type-check every stage of a pipeline file."""
    source = str(path)
    data = _unshared(_read(source))
    data.setdefault("run_dir", "runs/pipeline")
    for name, raw in data["stages"].items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{source}: stages: {name!r} is not a stage name (letters, digits, _ and -)")
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: stages.{name}: expected a mapping with `kind`")
        kind = kind_of(raw, source, name)
        if "base" in raw and kind not in TRAINING_KINDS:
            raise ConfigError(f"{source}: stages.{name}.base: only train and rl stages take a base config file")
        if kind in TRAINING_KINDS:
            data["stages"][name] = {"kind": raw["kind"], **_with_base(raw, source, f"stages.{name}")}
        if kind == "scaling" and isinstance(raw.get("train"), dict):
            raw["train"] = _with_base(raw["train"], source, f"stages.{name}.train")
    for ov in overrides:
        _override(data, ov, source)
    run_dir = data["run_dir"]
    if not isinstance(run_dir, str) or not run_dir:
        raise ConfigError(f"{source}: run_dir: expected a directory, got {run_dir!r}")

    stages: list[Stage] = []
    known: dict[str, Stage] = {}
    for name, raw in data["stages"].items():
        kind = kind_of(raw, source, name)
        spec = KINDS[kind]
        stage_dir = join_path(run_dir, name)
        uses: dict[str, str] = {}

        def resolve(ref: str, where: str, _name=name, _uses=uses) -> str:
            if ref == "run_dir":
                return run_dir
            parts = ref.split(".")
            if len(parts) != 3 or parts[0] != "stages":
                raise ConfigError(f"{source}: {where}: ${{{ref}}} is not ${{stages.NAME.OUTPUT}} or ${{run_dir}}")
            _, other, out = parts
            if other == _name or other not in known:
                later = " (a stage can only use earlier stages' outputs)" if other in data["stages"] else ""
                raise ConfigError(
                    f"{source}: {where}: ${{{ref}}}: no earlier stage {other!r}{later}; "
                    f"earlier stages: {', '.join(known) or 'none'}"
                )
            if out not in known[other].outputs:
                raise ConfigError(
                    f"{source}: {where}: ${{{ref}}}: a {known[other].kind} stage's outputs are "
                    f"{', '.join(known[other].outputs)}"
                )
            _uses[where.split(".", 2)[2]] = other
            return known[other].outputs[out]

        body = {k: v for k, v in raw.items() if k not in _META}
        body = _resolve_refs(body, resolve, f"stages.{name}")
        try:
            cfg = from_dict(spec.cls, body, f"stages.{name}")
            for dotted, value in _owned_values(kind, stage_dir).items():
                _set_owned(cfg, dotted, value, f"stages.{name}")
            if kind in TRAINING_KINDS:
                cfg.validate()
                if kind == "rl" and not cfg.init_from:
                    raise ConfigError("init_from: an rl stage starts from a checkpoint, e.g. ${stages.sft.checkpoint}")
            elif hasattr(cfg, "validate"):
                cfg.validate(f"stages.{name}")
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(f"{source}: {msg if msg.startswith('stages.') else f'stages.{name}: {msg}'}") from None
        outputs = {k: join_path(stage_dir, rel) for k, rel in spec.outputs.items()}
        if kind == "scaling":  # the largest size's model, for later stages to continue from
            outputs["checkpoint"] = join_path(stage_dir, f"size-{max(cfg.sizes)}", "train")
        stage = Stage(name, kind, cfg, stage_dir, outputs, uses)
        stages.append(stage)
        known[name] = stage
    return Pipeline(source, run_dir, stages)
