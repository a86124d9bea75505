"""Load the configuration once: packaged defaults, then a file, then environment.

Environment variables are `WISP__SECTION__KEY` (any depth, e.g.
`WISP__SCHEDULER__QUEUE__IDLE_GRACE_S=5`). This is the only module that reads
`os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from wisp.config.model import WispConfig
from wisp.core.errors import BadRequestError

T = TypeVar("T")

ENV_PREFIX = "WISP__"


class ConfigError(BadRequestError):
    """A configuration value is unknown or of the wrong type."""


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> WispConfig:
    """Build the WispConfig: defaults < file < environment < explicit overrides.

    `overrides` uses dotted keys (`"controller.port": 3233`), as the CLI flags do.
    """
    tree: dict[str, Any] = {}
    _merge(tree, _packaged_defaults())
    if path is not None:
        _merge(tree, tomllib.loads(Path(path).read_text()))
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            _set_dotted(tree, dotted, value)
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    config = _build(WispConfig, tree, "")
    _check_ranges(config, "")
    return config


def _packaged_defaults() -> dict[str, Any]:
    text = resources.files("wisp.config").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"configuration key {dotted} is not a section")
    node[leaf] = value


def _build(cls: type[T], raw: Mapping[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown configuration key(s): {_names(where, unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}{name}")
    return cls(**kwargs)


def _names(where: str, names: set[str]) -> str:
    return ", ".join(sorted(where + n for n in names))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"configuration key {where} must be a section")
        return _build(hint, value, where + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return tuple(value)
    if origin in (types.UnionType, typing.Union):
        return value
    try:
        if hint is bool:
            return _to_bool(value)
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return hint(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"configuration key {where} must be {hint.__name__}, got {value!r}"
        ) from exc
    return value


#: name endings of quantities that cannot be negative
_UNITS = ("_mb", "_s", "_ms", "_bytes")


def _check_ranges(node: Any, where: str) -> None:
    """Refuse values no deployment means: negative sizes and times, ports out of
    range, an invoker without memory."""
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        name = where + field.name
        if dataclasses.is_dataclass(value):
            _check_ranges(value, name + ".")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if field.name.endswith(_UNITS) and value < 0:
            raise ConfigError(f"configuration key {name} must not be negative")
        if field.name.endswith("port") and not -1 <= value <= 65535:
            raise ConfigError(f"configuration key {name} must be a port (0..65535)")
    if where == "messaging." and node.backend != "memory":
        raise ConfigError(
            f"messaging.backend {node.backend!r} is not available: only 'memory'"
        )
    if where == "store." and node.backend not in ("sqlite", "memory"):
        raise ConfigError(f"store.backend {node.backend!r}: use 'sqlite' or 'memory'")
    if where == "invoker." and node.user_memory_mb <= 0:
        raise ConfigError("configuration key invoker.user_memory_mb must be positive")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
