"""Parsing of configs: YAML files, ``a.b=value`` overrides (list items too: ``web[0].batch_ratio=1``),
path fields made absolute, types checked field by field, and the reference of every key.

Files layer over each other (mappings merge, anything else is replaced); the path fields of a
file are relative to its folder, those of an override to the current directory.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import Config, ConfigError, to_dict


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not allowed; expected {_type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        return {_coerce(k, key_tp, f"{where}.{k}"): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(names))}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def _tokens(dotted: str) -> list[str | int]:
    """``web[0].batch_ratio`` -> ["web", 0, "batch_ratio"]."""
    out: list[str | int] = []
    for part in dotted.split("."):
        m = re.fullmatch(r"(.*?)((?:\[-?\d+\])*)", part)
        if not m.group(1):
            raise ConfigError(f"{dotted}: empty field name (fields look like section.field or web[0].field)")
        out.append(m.group(1))
        out += [int(i) for i in re.findall(r"\[(-?\d+)\]", m.group(2))]
    return out


def _where(tokens: list[str | int]) -> str:
    return "".join(f"[{t}]" if isinstance(t, int) else (f".{t}" if k else t) for k, t in enumerate(tokens))


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set ``dotted`` (``a.b``, ``web[0].batch_ratio``, ``target.val_groups[1]``) in ``data``;
    containers the file did not set start from the defaults."""
    tokens = _tokens(dotted)
    node: Any = data
    default: Any = to_dict(Config())
    for k, tok in enumerate(tokens):
        here, last = _where(tokens[:k]), k == len(tokens) - 1
        if isinstance(tok, int):
            if not isinstance(node, list):
                raise ConfigError(f"{dotted}: {here} is not a list")
            if not -len(node) <= tok < len(node):
                raise ConfigError(f"{dotted}: no item {tok}; {here} has {len(node)} item(s)")
            default = default[tok] if isinstance(default, list) and -len(default) <= tok < len(default) else None
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {here or 'the config'} is not a section")
            default = default.get(tok) if isinstance(default, dict) else None
            if not last and tok not in node:
                node[tok] = copy.deepcopy(default) if isinstance(default, (dict, list)) else \
                    ([] if isinstance(tokens[k + 1], int) else {})
        if last:
            node[tok] = value
        else:
            node = node[tok]


def _field_at(tokens: list[str | int]) -> tuple[Any, Any]:
    """(type, dataclass field or None) of the config entry at ``tokens`` (None, None when unknown)."""
    tp, fld = Config, None
    for tok in tokens:
        if isinstance(tok, int):
            if typing.get_origin(tp) is not list:
                return None, None
            tp, fld = typing.get_args(tp)[0], None
        elif dataclasses.is_dataclass(tp):
            fields = {f.name: f for f in dataclasses.fields(tp)}
            if tok not in fields:
                return None, None
            tp, fld = typing.get_type_hints(tp)[tok], fields[tok]
        elif typing.get_origin(tp) is dict:
            tp, fld = typing.get_args(tp)[1], None
        else:
            return None, None
    return tp, fld


def _absolute(value: Any, base: Path, fld) -> Any:
    if not isinstance(value, str) or not value or value in fld.metadata.get("keywords", ()):
        return value
    p = Path(value).expanduser()
    return os.path.abspath(p if p.is_absolute() else base / p)


def _resolve_paths(value: Any, tp: Any, base: Path) -> Any:
    """Make the path fields inside ``value`` (of config type ``tp``) absolute against ``base``."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints, fields = typing.get_type_hints(tp), {f.name: f for f in dataclasses.fields(tp)}
        out = {}
        for k, v in value.items():
            f = fields.get(k)
            out[k] = v if f is None else _absolute(v, base, f) if f.metadata.get("path") else \
                _resolve_paths(v, hints[k], base)
        return out
    if typing.get_origin(tp) is list and isinstance(value, list):
        return [_resolve_paths(v, typing.get_args(tp)[0], base) for v in value]
    return value


def _merge(base: Any, top: Any) -> Any:
    """``top`` over ``base``: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(top, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in top.items()}}
    return copy.deepcopy(top)


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=5`` -> ("train.epochs", 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"{text}: overrides look like section.field=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{text}: missing field name before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def read_config_file(path: str | Path) -> dict:
    """The mapping of one YAML config file, its path fields made absolute against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read the config ({err})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return _resolve_paths(loaded or {}, Config, p.parent.absolute())


def config_data(paths: str | Path | list | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The raw mapping of config files (later ones over earlier ones) plus ``a.b=value`` overrides
    (their paths absolute against the current directory)."""
    data: dict = {}
    for p in [paths] if isinstance(paths, (str, Path)) else list(paths or []):
        data = _merge(data, read_config_file(p))
    for text in overrides:
        key, value = parse_override(text)
        tp, fld = _field_at(_tokens(key))
        if fld is not None and fld.metadata.get("path"):
            value = _absolute(value, Path.cwd(), fld)
        elif tp is not None:
            value = _resolve_paths(value, tp, Path.cwd())
        _set_dotted(data, key, value)
    return data


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _type_label(tp: Any, f: dataclasses.Field) -> str:
    if f.metadata.get("path"):
        return "path" + (" or " + " | ".join(f.metadata["keywords"]) if f.metadata.get("keywords") else "")
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(tp))
    if origin is dict:
        return "mapping"
    return _type_name(tp)


def config_reference(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) of every config field, in the order of the dataclasses."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(tp):
            rows += config_reference(tp, key + ".")
            continue
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            rows.append((key, "list", "[]", f.metadata.get("doc", "")))
            rows += config_reference(typing.get_args(tp)[0], key + "[i].")
            continue
        default = yaml.safe_dump(_default(f), default_flow_style=True).strip().removesuffix("...").strip()
        rows.append((key, _type_label(tp, f), default, f.metadata.get("doc", "")))
    return rows
