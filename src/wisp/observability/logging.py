"""Logging setup and the context ids every record carries.

Ids travel in context variables (transaction id, component, namespace, action,
activation id); `ContextFilter` copies them into each record. Text format is
key=value for development, JSON for services.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

_FIELDS = ("tid", "component", "namespace", "action", "activation_id")

_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"wisp_{name}", default=None) for name in _FIELDS
}


def set_context(**ids: str | None) -> None:
    """Set ids for the current task and the tasks it starts from now on."""
    for name, value in ids.items():
        _context[name].set(value)


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    tokens = [(name, _context[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for name, token in reversed(tokens):
            _context[name].reset(token)


def current_context() -> dict[str, str]:
    return {n: v for n, var in _context.items() if (v := var.get()) is not None}


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        ids = " ".join(
            f"{n}={getattr(record, n)}" for n in _FIELDS if getattr(record, n, None)
        )
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: "
        line += record.getMessage()
        if ids:
            line += f" [{ids}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
