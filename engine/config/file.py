"""Reading and writing the engine configuration: TOML tables, ``CROSSREC_<SECTION>__<FIELD>``
environment overrides, typed values, and a helpful refusal of the old flat keys.

Order: dataclass defaults < the TOML file < the environment < explicit overrides. Every value is
checked against its field's type here (a string where a number belongs names the key) and every
range in :mod:`engine.config.check`. ``show`` prints the effective configuration as TOML with
secrets redacted; what it prints loads back to the same configuration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from pathlib import Path

from engine.config import Blend
from engine.config.check import ConfigError

ENV_PREFIX = "CROSSREC_"
REDACTED = "<redacted>"
#: Old flat keys (before sections) whose field changed its name; every other old key kept its
#: name inside its section (``max_k`` -> ``[limits] max_k``).
RENAMED = {
    "artifact": "arms.artifact",
    "model": "arms.model",
    "arm_b_artifact": "arms.b_artifact",
    "arm_b_model": "arms.b_model",
    "arm_b_share": "arms.b_share",
    "arm_salt": "arms.salt",
    "ranker_threads": "ranker.threads",
    "store": "store.path",
    "store_max_mb": "store.max_mb",
    "auth_tokens": "auth.tokens",
    "auth_tokens_file": "auth.tokens_file",
    "auth_protect_health": "auth.protect_health",
    "tls_cert_file": "tls.cert_file",
    "tls_key_file": "tls.key_file",
    "tls_client_ca_file": "tls.client_ca_file",
    "shard_group_replicas": "ray.group_replicas",
    "shard_group_cpus": "ray.group_cpus",
    "shard_group_timeout_s": "ray.group_timeout_s",
    "shard_group_on_late": "ray.on_late",
    "ray_address": "ray.address",
    **{f"blend_{f.name}": f"retrieval.blend.{f.name}" for f in dataclasses.fields(Blend)},
}


def leaves(cls, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every settable field under the dataclass ``cls``: (path, type), in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out += leaves(kind, (*prefix, f.name))
        else:
            out.append(((*prefix, f.name), kind))
    return out


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(path).upper()


def where(path: tuple[str, ...]) -> str:
    """How a user names a field: ``max_k in [limits] (CROSSREC_LIMITS__MAX_K)``."""
    table = ".".join(path[:-1])
    return f"{path[-1]} in [{table}] ({env_name(path)})" if table else path[-1]


def legacy_keys(cls) -> dict[str, tuple[str, ...]]:
    """Old flat key -> the field's path now."""
    out: dict[str, tuple[str, ...]] = {}
    for path, _ in leaves(cls):
        if len(path) == 2:
            out[path[1]] = path
    out.update({old: tuple(new.split(".")) for old, new in RENAMED.items()})
    return out


def load(cls, path: str | Path | None, overrides: dict | None = None):
    """The configuration ``cls`` (EngineConfig) from defaults, ``path``, the environment and
    ``overrides``; raises :class:`ConfigError` naming the first bad key or every bad range."""
    values: dict = {}
    legacy = legacy_keys(cls)
    if path is not None:
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        _check_keys(cls, data, (), str(path), legacy)
        values = data
    for old, new in legacy.items():
        if os.environ.get(ENV_PREFIX + old.upper()) is not None:
            raise ConfigError(
                f"{ENV_PREFIX}{old.upper()} is an old flat setting: set {env_name(new)} instead"
            )
    for leaf, kind in leaves(cls):
        text = os.environ.get(env_name(leaf))
        if text is not None:
            _put(values, leaf, _from_text(text, kind, env_name(leaf)))
    for section, fields in (overrides or {}).items():
        for name, value in fields.items():
            if value is not None:
                _put(values, (section, name), value)
    _check_keys(cls, values, (), "overrides", legacy)
    return _build(cls, values, ())


def _put(values: dict, path: tuple[str, ...], value) -> None:
    for part in path[:-1]:
        values = values.setdefault(part, {})
    values[path[-1]] = value


def _check_keys(cls, data: dict, prefix: tuple, source: str, legacy: dict) -> None:
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        here = (*prefix, key)
        if key not in hints:
            hint = f"; it is now {where(legacy[key])}" if not prefix and key in legacy else ""
            known = ", ".join(hints)
            raise ConfigError(
                f"{source}: unknown setting {'.'.join(here)}{hint} (known here: {known})"
            )
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                hint = f"; the old flat {key} is now {where(legacy[key])}" if key in legacy else ""
                raise ConfigError(f"{source}: {key} must be the table [{'.'.join(here)}]{hint}")
            _check_keys(hints[key], value, here, source, legacy)


def _build(cls, values: dict, prefix: tuple):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, (*prefix, name))
        else:
            kwargs[name] = _typed(value, kind, ".".join((*prefix, name)))
    return cls(**kwargs)


def _optional(kind) -> tuple[object, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    if isinstance(kind, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        return inner[0], True
    return kind, False


def _typed(value, kind, name: str):
    """``value`` (from TOML or an override) as ``kind``, or ConfigError naming ``name``."""
    kind, nullable = _optional(kind)
    if nullable and (value is None or value == "none"):
        return None
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    return value


def _from_text(text: str, kind, name: str):
    """An environment variable's text as ``kind``."""
    inner, nullable = _optional(kind)
    stripped = text.strip().lower()
    if nullable and stripped in ("", "none"):
        return None
    try:
        if inner is int:
            return int(text)
        if inner is float:
            return float(text)
    except ValueError:
        raise ConfigError(
            f"{name} must be {'an integer' if inner is int else 'a number'}, got {text!r}"
        ) from None
    if inner is bool:
        if stripped not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{name}: expected true or false, got {text!r}")
        return stripped in ("1", "true", "yes")
    return text


def show(config) -> str:
    """``config`` as TOML, secrets (fields marked ``secret``) replaced by ``<redacted>``."""
    return to_toml(_as_mapping(config))


def _as_mapping(obj) -> dict:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _as_mapping(value)
        elif f.metadata.get("secret") and value:
            out[f.name] = REDACTED
        else:
            out[f.name] = "none" if value is None else value
    return out


def to_toml(data: dict, prefix: tuple[str, ...] = ()) -> str:
    """A mapping of scalars and nested mappings as TOML (what the configuration needs, no more)."""
    lines = []
    if prefix and any(not isinstance(v, dict) for v in data.values()):
        lines.append(f"[{'.'.join(prefix)}]")
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_scalar(value)}")
    text = "\n".join(lines)
    for key, value in data.items():
        if isinstance(value, dict):
            nested = to_toml(value, (*prefix, key))
            text = f"{text}\n\n{nested}" if text else nested
    return text + ("\n" if not prefix else "")


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))
