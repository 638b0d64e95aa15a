"""Command-line flags derived from a config dataclass, and the config built back from them.

Each field of the dataclass (and of its nested sections, flattened) becomes one flag: name from the
field (or its `setting(flag=...)`), help and default from the field, choices from a `Literal`, a
`--x/--no-x` pair for a bool, a repeatable flag for a list (also comma-separated, or several values
after one flag, where the field says so). Every command built this way also takes `--config FILE`
(YAML of the same dataclass, `base:` files allowed) and `key=value` overrides; a flag given on the
command line wins over the file, an override over both. No default is written here.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal

from mathjax_train.config import ConfigError, apply_override, from_dict, read_config_file

_PREFIX = "cfg:"  # argparse dests of derived flags: "cfg:" + the field's dotted path


def _fields(cls: type, instance: Any, path: str = ""):
    """(dotted path, field, annotation, default) of every leaf field, nested sections flattened."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, default = hints[f.name], getattr(instance, f.name)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from _fields(tp, default, f"{path}{f.name}.")
        else:
            yield f"{path}{f.name}", f, tp, default


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _split_commas(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, required: tuple[str, ...] = ()) -> None:
    """One flag per field of `cls`, plus `--config` and overrides; `required` fields must be set by a
    flag, the file or an override."""
    parser.set_defaults(config_cls=cls, config_required=required)
    add_field_flags(parser, cls)
    parser.add_argument("--config", default=None, help=f"YAML file of {cls.__name__} settings (flags override it)")
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],
        metavar="key=value",
        help=f"{cls.__name__} fields as dotted key=value, applied last",
    )


def add_field_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """One flag per field of `cls` (nested sections flattened), nothing else: for a command whose own
    `--config` is another file (`plan --sampling`); `config_from_flags` builds `cls` back."""
    names: dict[str, str] = {}
    for path, f, tp, default in _fields(cls, cls()):
        if typing.get_origin(tp) is dict:
            continue  # mappings (e.g. rules) are set in the file or as key=value
        flag = _flag(f)
        if flag in names:
            raise AssertionError(f"{cls.__name__}: {path} and {names[flag]} both map to {flag}")
        names[flag] = path
        help_text = f.metadata.get("help", "")
        kw: dict[str, Any] = {"dest": _PREFIX + path, "default": argparse.SUPPRESS}
        origin = typing.get_origin(tp)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            (item,) = typing.get_args(tp)
            literal = typing.get_origin(item) is Literal
            if f.metadata.get("commas"):  # a Literal item is then checked when the config is built
                kw.update(action="extend", type=_split_commas)
                help_text += " (comma-separated; repeatable)"
            else:
                kw.update(type=str if literal else item)
                if literal:
                    kw["choices"] = list(typing.get_args(item))
                if f.metadata.get("spaced"):
                    kw.update(action="extend", nargs="+")
                    help_text += " (one or more; repeatable)"
                else:
                    kw["action"] = "append"
                    help_text += " (repeatable)"
        elif origin is Literal:
            kw["choices"] = list(typing.get_args(tp))
        if tp is not bool and "choices" not in kw:
            kw["metavar"] = f.name.upper()
            kw.setdefault("type", tp)
        kw["help"] = f"{help_text} (default: {default!r})" if help_text else f"default: {default!r}"
        if flag.startswith("-"):
            parser.add_argument(flag, **kw)
        else:
            kw.pop("dest")
            parser.add_argument(_PREFIX + path, nargs="?", **kw)


def flags_given(args: argparse.Namespace, cls: type) -> list[str]:
    """The derived flags of `cls` set on this command line, as typed (`--page-size`)."""
    given = {dest[len(_PREFIX) :] for dest in vars(args) if dest.startswith(_PREFIX)}
    return [_flag(f) for path, f, _, _ in _fields(cls, cls()) if path in given]


def config_from_flags(args: argparse.Namespace, cls: type, where: str) -> Any:
    """`cls` from its derived flags alone (see add_field_flags), defaults elsewhere; validated."""
    data: dict = {}
    for dest, value in vars(args).items():
        if dest.startswith(_PREFIX):
            *sections, leaf = dest[len(_PREFIX) :].split(".")
            node = data
            for name in sections:
                node = node.setdefault(name, {})
            node[leaf] = value
    cfg = from_dict(cls, data, where)
    if hasattr(cfg, "validate"):
        cfg.validate(where)
    return cfg


def add_flag_alias(parser: argparse.ArgumentParser, alias: str, path: str) -> None:
    """`alias` sets the scalar field at dotted `path` as its derived flag does (an old name kept
    working); it is left out of --help."""
    action = next(a for a in parser._actions if a.dest == _PREFIX + path)
    if action.type is None or action.nargs is not None:
        raise AssertionError(f"{alias}: aliases are for scalar fields, not {path}")
    parser.add_argument(
        alias,
        dest=action.dest,
        type=action.type,
        choices=action.choices,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def config_from_args(args: argparse.Namespace) -> Any:
    """The command's config from `--config`, then the flags given, then the overrides; validated.
    Errors name the command and the field; a required field left empty names its flag."""
    cls, required, command = args.config_cls, args.config_required, args.command
    source = args.config or "the command line"
    data = read_config_file(args.config) if args.config else {}
    overrides = list(args.overrides)
    positional = {_PREFIX + p for p, f, _, _ in _fields(cls, cls()) if not _flag(f).startswith("-")}
    for dest, value in vars(args).items():
        if not dest.startswith(_PREFIX):
            continue
        if dest in positional and _is_override(cls, value):
            # argparse hands the first positional word to the field even when the field comes from
            # --config and the word is an override (`serve --config s.yaml port=1`)
            overrides.insert(0, value)
            continue
        *sections, leaf = dest[len(_PREFIX) :].split(".")
        node = data
        for name in sections:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {name} must be a mapping")
        node[leaf] = value
    for ov in overrides:
        apply_override(data, cls, ov)
    try:
        cfg = from_dict(cls, data, command)
        for path in required:
            if not _get(cfg, path):
                flag = next(_flag(f) for p, f, _, _ in _fields(cls, cfg) if p == path)
                flag = flag if flag.startswith("-") else flag.upper()
                raise ConfigError(f"{command}: {flag} is required (or `{path}:` in --config)")
        if hasattr(cfg, "validate"):
            cfg.validate(command)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if args.config else str(e)) from None
    return cfg


def _is_override(cls: type, value: Any) -> bool:
    """Whether `value` is `key=value` with `key` a dotted field path of `cls` (not, say, a file path)."""
    if not isinstance(value, str) or "=" not in value:
        return False
    node: Any = cls
    for name in value.split("=", 1)[0].split("."):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)) or name not in typing.get_type_hints(node):
            return False
        node = typing.get_type_hints(node)[name]
    return True


def _get(cfg: Any, path: str) -> Any:
    for name in path.split("."):
        cfg = getattr(cfg, name)
    return cfg
