"""How a config is read: `setting()` fields, the checks of `Literal` choices and shards, YAML files
composed by `base:`, `key=value` overrides, and the type-checked build of a dataclass from a mapping
(`from_dict`), which names the source and field of any mistake.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal

import yaml

from mathjax_train.errors import ConfigError


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    flag: str = "",
    commas: bool = False,
    spaced: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with the help text the command line derives from it (cli/config_flags.py), and
    where needed its flag (`--name`; no dashes: positional) and, for lists, whether a value may be
    comma-separated or one flag take several values (`--methods a b`); the default is written only here."""
    meta = {"help": help, "flag": flag, "commas": commas, "spaced": spaced}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def _check_literal(value: Any, tp: Any, where: str) -> None:
    if value not in typing.get_args(tp):
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")


def check_choices(cfg: Any, where: str) -> None:
    """Every `Literal` field of dataclass `cfg` holds one of its values (nested sections too): for a
    config built in code; one read from YAML or flags was checked as it was read (`_coerce`)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, tp = getattr(cfg, f.name), hints[f.name]
        if typing.get_origin(tp) is Literal:
            _check_literal(value, tp, f"{where}.{f.name}")
        if typing.get_origin(tp) is list and typing.get_origin(typing.get_args(tp)[0]) is Literal:
            for i, item in enumerate(value):
                _check_literal(item, typing.get_args(tp)[0], f"{where}.{f.name}[{i}]")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_choices(value, f"{where}.{f.name}")


def check_shard(shard_index: int, num_shards: int, where: str) -> None:
    """shard_index / num_shards of a job split over hosts (parallel/host_shard.py)."""
    if num_shards < 0:
        raise ConfigError(f"{where}.num_shards: must be >= 0 (0 = jax.process_count()), got {num_shards}")
    if shard_index < -1 or (num_shards and shard_index >= num_shards):
        raise ConfigError(f"{where}.shard_index: {shard_index} is not in [0, {num_shards or 'num_shards'})")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        _check_literal(value, tp, where)
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]  # a scalar where a list is expected: a list of one
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-5" as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported annotation {_describe(tp)}")


def from_dict(cls: type, data: dict, where: str = "config", base: Any = None) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are an error listing the valid ones. Fields
    not given keep `base`'s values (or the defaults); a section given in part keeps the rest of its
    field's own default (e.g. `GenerateConfig(max_new_tokens=512)`), not its class's."""
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for k, v in data.items():
        tp, factory = hints[k], fields[k].default_factory
        if isinstance(v, dict) and isinstance(tp, type) and dataclasses.is_dataclass(tp):
            default = getattr(base, k) if base is not None else None if factory is dataclasses.MISSING else factory()
            kwargs[k] = from_dict(tp, v, f"{where}.{k}", default)
        else:
            kwargs[k] = _coerce(v, tp, f"{where}.{k}")
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_override(data: dict, cls: type, override: str) -> None:
    """Apply one `a.b.c=value` override to the raw mapping `data` (validated against `cls`)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node, node_cls = data, cls
    path: list[str] = []
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node_cls)]
        if part not in names:
            where = ".".join(path) or "config"
            raise ConfigError(f"override {override!r}: unknown key {part!r} in {where}; valid keys: {', '.join(names)}")
        path.append(part)
        tp = _field_types(node_cls)[part]
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(raw) if raw.strip() else ""
            if tp is str and not isinstance(node[part], str):
                node[part] = raw  # keep e.g. output_dir=123 as the string the user typed
        else:
            if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
                raise ConfigError(f"override {override!r}: {'.'.join(path)} is not a section")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(path)} is not a section")
            node_cls = tp


def is_remote(path) -> bool:
    """Whether a path setting names an object store URL (gs://, s3://, ...) rather than a local path."""
    return "://" in str(path)


def read_yaml_mapping(path, where: str, missing: str = "not found") -> dict:
    """A YAML file (local or gs://) whose top level is a mapping; errors start with `where`."""
    from etils import epath

    try:
        text = epath.Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{where}: {missing}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    return data


def merge_mappings(base: dict, over: dict) -> dict:
    """`over` on top of `base`, mapping by mapping; lists and scalars are replaced whole."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_mappings(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def relative_to(path: str, source) -> str:
    """`path` as written in the file `source`: relative paths are taken from that file's directory."""
    from etils import epath

    if is_remote(path) or epath.Path(path).is_absolute():
        return path
    return str(epath.Path(source).parent / path)


def read_config_file(path, where: str | None = None, _chain: tuple[str, ...] = ()) -> dict:
    """A YAML config as a mapping, composed: its `base:` files merged in (`read_bases`), then the file
    itself on top. So a recipe states only what differs from its model, topology and recipe bases."""
    where = where or str(path)
    data = read_yaml_mapping(path, where, missing="config file not found")
    bases = data.pop("base", None)
    return data if bases is None else merge_mappings(read_bases(bases, path, where, _chain), data)


def read_bases(bases: Any, source, where: str, _chain: tuple[str, ...] = ()) -> dict:
    """The `base:` value written in the file `source`, a file or a list of files relative to it, each
    read with its own bases, merged in order (a later base wins)."""
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{where}: base: expected a file or a list of files, got {bases!r}")
    merged: dict = {}
    chain = (*_chain, str(source))
    for b in bases:
        target = relative_to(b, source)
        if target in chain:
            raise ConfigError(f"{where}: base: {b} includes itself ({' -> '.join((*chain, target))})")
        merged = merge_mappings(merged, read_config_file(target, f"{where}: base {target}", chain))
    return merged
