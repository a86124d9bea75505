"""Activations: the message that carries one invocation, and the record it ends with.

`ActivationMessage` travels controller → scheduler → container; `WhiskActivation` is
the stored record with OpenWhisk's fields and status codes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from wisp.core.entity import FullyQualifiedEntityName, Identity
from wisp.core.ids import ControllerInstanceId, TransactionId, now_ms


class ResponseStatus(enum.IntEnum):
    SUCCESS = 0
    APPLICATION_ERROR = 1
    DEVELOPER_ERROR = 2
    WHISK_ERROR = 3

    @property
    def text(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    ResponseStatus.SUCCESS: "success",
    ResponseStatus.APPLICATION_ERROR: "application error",
    ResponseStatus.DEVELOPER_ERROR: "action developer error",
    ResponseStatus.WHISK_ERROR: "whisk internal error",
}


@dataclass(frozen=True, slots=True)
class ActivationResponse:
    status: ResponseStatus
    result: Any = None

    @property
    def success(self) -> bool:
        return self.status is ResponseStatus.SUCCESS

    @classmethod
    def ok(cls, result: Any) -> ActivationResponse:
        return cls(ResponseStatus.SUCCESS, result)

    @classmethod
    def application_error(cls, error: Any) -> ActivationResponse:
        return cls(ResponseStatus.APPLICATION_ERROR, {"error": error})

    @classmethod
    def developer_error(cls, message: str) -> ActivationResponse:
        return cls(ResponseStatus.DEVELOPER_ERROR, {"error": message})

    @classmethod
    def whisk_error(cls, message: str) -> ActivationResponse:
        return cls(ResponseStatus.WHISK_ERROR, {"error": message})

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.text,
            "statusCode": int(self.status),
            "success": self.success,
            "result": self.result,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ActivationResponse:
        return cls(ResponseStatus(int(raw.get("statusCode", 3))), raw.get("result"))


@dataclass(frozen=True, slots=True)
class ActivationMessage:
    transid: TransactionId
    action: FullyQualifiedEntityName
    revision: str | None
    user: Identity
    activation_id: str
    root_controller_index: ControllerInstanceId
    blocking: bool
    content: Any = None
    init_args: frozenset[str] = frozenset()
    cause: str | None = None

    @property
    def invocation_namespace(self) -> str:
        return self.user.namespace

    def with_revision(self, revision: str | None) -> ActivationMessage:
        return replace(self, revision=revision)

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "transid": self.transid.to_json(),
            "action": self.action.to_json(),
            "revision": self.revision,
            "user": self.user.to_json(),
            "activationId": self.activation_id,
            "rootControllerIndex": self.root_controller_index.to_json(),
            "blocking": self.blocking,
            "initArgs": sorted(self.init_args),
            "lockedArgs": {},
        }
        if self.content is not None:
            raw["content"] = self.content
        if self.cause:
            raw["cause"] = self.cause
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ActivationMessage:
        return cls(
            transid=TransactionId.from_json(raw["transid"]),
            action=FullyQualifiedEntityName.from_json(raw["action"]),
            revision=raw.get("revision"),
            user=Identity.from_json(raw["user"]),
            activation_id=str(raw["activationId"]),
            root_controller_index=ControllerInstanceId.from_json(
                raw["rootControllerIndex"]
            ),
            blocking=bool(raw.get("blocking", False)),
            content=raw.get("content"),
            init_args=frozenset(raw.get("initArgs", [])),
            cause=raw.get("cause"),
        )


@dataclass(frozen=True, slots=True)
class WhiskActivation:
    """The activation record (what `GET .../activations/{id}` returns)."""

    namespace: str
    name: str
    subject: str
    activation_id: str
    start_ms: int
    end_ms: int
    response: ActivationResponse
    version: str = "0.0.1"
    logs: list[str] = field(default_factory=list)
    annotations: dict[str, Any] = field(default_factory=dict)
    cause: str | None = None
    publish: bool = False

    @property
    def duration_ms(self) -> int:
        return max(0, self.end_ms - self.start_ms)

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "subject": self.subject,
            "activationId": self.activation_id,
            "start": self.start_ms,
            "end": self.end_ms,
            "duration": self.duration_ms,
            "response": self.response.to_json(),
            "logs": list(self.logs),
            "annotations": [
                {"key": k, "value": v} for k, v in self.annotations.items()
            ],
            "version": self.version,
            "publish": self.publish,
        }
        if self.cause:
            raw["cause"] = self.cause
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WhiskActivation:
        annotations = raw.get("annotations") or []
        if isinstance(annotations, list):
            annotations = {a["key"]: a.get("value") for a in annotations}
        return cls(
            namespace=raw["namespace"],
            name=raw["name"],
            subject=raw.get("subject", ""),
            activation_id=raw["activationId"],
            start_ms=int(raw["start"]),
            end_ms=int(raw["end"]),
            response=ActivationResponse.from_json(raw["response"]),
            version=raw.get("version", "0.0.1"),
            logs=list(raw.get("logs", [])),
            annotations=dict(annotations),
            cause=raw.get("cause"),
            publish=bool(raw.get("publish", False)),
        )


def failed_activation(
    msg: ActivationMessage,
    response: ActivationResponse,
    *,
    kind: str = "unknown",
    limits: dict[str, Any] | None = None,
) -> WhiskActivation:
    """The zero-duration record for an activation the platform gave up on."""
    now = now_ms()
    annotations: dict[str, Any] = {"path": msg.action.unversioned(), "kind": kind}
    if limits is not None:
        annotations["limits"] = limits
    if msg.cause:
        annotations["causedBy"] = "sequence"
    annotations["waitTime"] = max(0, now - msg.transid.start_ms)
    return WhiskActivation(
        namespace=msg.invocation_namespace,
        name=msg.action.name,
        subject=msg.user.subject,
        activation_id=msg.activation_id,
        start_ms=now,
        end_ms=now,
        response=response,
        version=msg.action.version or "0.0.1",
        annotations=annotations,
        cause=msg.cause,
    )
