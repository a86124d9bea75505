"""Identities that travel in messages: transactions, activations, instances, creations.

JSON shapes follow OpenWhisk's wire format so that records read the same.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


def new_activation_id() -> str:
    """32 lowercase hex characters, as OpenWhisk's ActivationId."""
    return uuid.uuid4().hex


def new_creation_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class TransactionId:
    """`[id, startMillis]` on the wire; `start_ms` measures an activation's age."""

    id: str
    start_ms: int

    @classmethod
    def new(cls, prefix: str = "") -> TransactionId:
        return cls(prefix + uuid.uuid4().hex[:24], now_ms())

    @classmethod
    def system(cls, name: str) -> TransactionId:
        return cls(name, now_ms())

    def to_json(self) -> list[Any]:
        return [self.id, self.start_ms]

    @classmethod
    def from_json(cls, raw: Any) -> TransactionId:
        if isinstance(raw, list) and len(raw) >= 2:
            return cls(str(raw[0]), int(raw[1]))
        if isinstance(raw, str):
            return cls(raw, now_ms())
        raise ValueError(f"not a transaction id: {raw!r}")


@dataclass(frozen=True, slots=True)
class ControllerInstanceId:
    as_string: str

    def to_json(self) -> dict[str, Any]:
        return {"asString": self.as_string, "instanceType": "controller"}

    @classmethod
    def from_json(cls, raw: Any) -> ControllerInstanceId:
        return cls(str(raw["asString"]))


@dataclass(frozen=True, slots=True)
class SchedulerInstanceId:
    as_string: str

    def __str__(self) -> str:
        return f"scheduler{self.as_string}"

    def to_json(self) -> dict[str, Any]:
        return {"asString": self.as_string}

    @classmethod
    def from_json(cls, raw: Any) -> SchedulerInstanceId:
        return cls(str(raw["asString"]))


@dataclass(frozen=True, slots=True)
class InvokerInstanceId:
    instance: int
    user_memory_mb: int = 0
    unique_name: str | None = None
    display_name: str | None = None

    def __str__(self) -> str:
        text = f"invoker{self.instance}"
        if self.unique_name:
            text += f"/{self.unique_name}"
            if self.display_name:
                text += f"/{self.display_name}"
        return text

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "instance": self.instance,
            "userMemory": f"{self.user_memory_mb} MB",
            "instanceType": "invoker",
        }
        if self.unique_name:
            raw["uniqueName"] = self.unique_name
        if self.display_name:
            raw["displayedName"] = self.display_name
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> InvokerInstanceId:
        memory = str(raw.get("userMemory", "0 MB")).split()[0]
        return cls(
            int(raw["instance"]),
            int(float(memory)),
            raw.get("uniqueName"),
            raw.get("displayedName"),
        )
