"""Messages between roles: container creation/deletion, creation acks, completion acks,
scheduler and invoker records kept in etcd, and the answers of FetchActivation.

Each has `to_json`/`from_json` with OpenWhisk's field names; `encode`/`decode` turn a
message into bytes for the broker.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from wisp.core.activation import ActivationMessage, WhiskActivation
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.ids import (
    InvokerInstanceId,
    SchedulerInstanceId,
    TransactionId,
)


def encode(raw: dict[str, Any]) -> bytes:
    return json.dumps(raw, separators=(",", ":")).encode()


def decode(data: bytes | str) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("message is not a JSON object")
    return value


# --- container creation errors ----------------------------------------------------------


class ContainerCreationError(enum.Enum):
    NO_AVAILABLE_INVOKERS = "NoAvailableInvokersError"
    NO_AVAILABLE_RESOURCE_INVOKERS = "NoAvailableResourceInvokersError"
    RESOURCE_NOT_ENOUGH = "ResourceNotEnoughError"
    WHISK_ERROR = "WhiskError"
    UNKNOWN_ERROR = "UnknownError"
    TIMEOUT_ERROR = "TimeoutError"
    SHUTTING_DOWN = "ShuttingDownError"
    ZERO_NAMESPACE_LIMIT = "ZeroNamespaceLimit"
    NON_EXECUTABLE_ACTION = "NonExecutableActionError"
    DB_FETCH_ERROR = "DBFetchError"
    BLACKBOX_ERROR = "BlackBoxError"
    TOO_MANY_CONCURRENT_REQUESTS = "TooManyConcurrentRequests"
    INVALID_ACTION_LIMIT = "InvalidActionLimitError"

    @property
    def is_whisk_error(self) -> bool:
        """Recoverable errors: the creation is retried and queued work is kept."""
        return self in _WHISK_ERRORS

    @property
    def text(self) -> str:
        return _ERROR_TEXT[self]

    @classmethod
    def parse(cls, name: str) -> ContainerCreationError:
        # DIVERGENCE(openwhisk): the original cannot parse ShuttingDownError and
        # misspells NonExecutableActionError; every value parses here.
        for member in cls:
            if member.value.lower() == name.lower():
                return member
        raise ValueError(f"unknown container creation error: {name}")


_WHISK_ERRORS = frozenset(
    {
        ContainerCreationError.NO_AVAILABLE_INVOKERS,
        ContainerCreationError.NO_AVAILABLE_RESOURCE_INVOKERS,
        ContainerCreationError.RESOURCE_NOT_ENOUGH,
        ContainerCreationError.WHISK_ERROR,
        ContainerCreationError.UNKNOWN_ERROR,
        ContainerCreationError.TIMEOUT_ERROR,
        ContainerCreationError.SHUTTING_DOWN,
        ContainerCreationError.ZERO_NAMESPACE_LIMIT,
    }
)

_ERROR_TEXT = {
    ContainerCreationError.NO_AVAILABLE_INVOKERS: "no available invoker is found",
    ContainerCreationError.NO_AVAILABLE_RESOURCE_INVOKERS: (
        "no available invoker with the resources is found"
    ),
    ContainerCreationError.RESOURCE_NOT_ENOUGH: "invoker(s) have not enough resources",
    ContainerCreationError.WHISK_ERROR: "whisk error(recoverable) happens",
    ContainerCreationError.UNKNOWN_ERROR: "a unknown error happens",
    ContainerCreationError.TIMEOUT_ERROR: "a timeout error happens",
    ContainerCreationError.SHUTTING_DOWN: "shutting down error happens",
    ContainerCreationError.ZERO_NAMESPACE_LIMIT: "the namespace has 0 limit configured",
    ContainerCreationError.NON_EXECUTABLE_ACTION: "no executable found for the action",
    ContainerCreationError.DB_FETCH_ERROR: "an error happens while fetching data from DB",
    ContainerCreationError.BLACKBOX_ERROR: "a blackbox error happens",
    ContainerCreationError.TOO_MANY_CONCURRENT_REQUESTS: (
        "too many concurrent requests are in flight."
    ),
    ContainerCreationError.INVALID_ACTION_LIMIT: "a configured action limit is invalid.",
}


# --- scheduler → invoker -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerCreationMessage:
    transid: TransactionId
    invocation_namespace: str
    action: FullyQualifiedEntityName
    revision: str
    action_metadata: dict[str, Any]
    root_scheduler_index: SchedulerInstanceId
    scheduler_host: str
    rpc_port: int
    creation_id: str
    retry_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "transid": self.transid.to_json(),
            "invocationNamespace": self.invocation_namespace,
            "action": self.action.to_json(),
            "revision": self.revision,
            "whiskActionMetaData": self.action_metadata,
            "rootSchedulerIndex": self.root_scheduler_index.to_json(),
            "schedulerHost": self.scheduler_host,
            "rpcPort": self.rpc_port,
            "retryCount": self.retry_count,
            "creationId": self.creation_id,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ContainerCreationMessage:
        return cls(
            transid=TransactionId.from_json(raw["transid"]),
            invocation_namespace=raw["invocationNamespace"],
            action=FullyQualifiedEntityName.from_json(raw["action"]),
            revision=raw.get("revision") or "",
            action_metadata=raw["whiskActionMetaData"],
            root_scheduler_index=SchedulerInstanceId.from_json(
                raw["rootSchedulerIndex"]
            ),
            scheduler_host=raw["schedulerHost"],
            rpc_port=int(raw["rpcPort"]),
            creation_id=raw["creationId"],
            retry_count=int(raw.get("retryCount", 0)),
        )


@dataclass(frozen=True, slots=True)
class ContainerDeletionMessage:
    transid: TransactionId
    invocation_namespace: str
    action: FullyQualifiedEntityName
    revision: str
    action_metadata: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "transid": self.transid.to_json(),
            "invocationNamespace": self.invocation_namespace,
            "action": self.action.to_json(),
            "revision": self.revision,
            "whiskActionMetaData": self.action_metadata,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ContainerDeletionMessage:
        return cls(
            transid=TransactionId.from_json(raw["transid"]),
            invocation_namespace=raw["invocationNamespace"],
            action=FullyQualifiedEntityName.from_json(raw["action"]),
            revision=raw.get("revision") or "",
            action_metadata=raw["whiskActionMetaData"],
        )


def parse_invoker_message(
    raw: dict[str, Any],
) -> ContainerCreationMessage | ContainerDeletionMessage:
    """Creation and deletion share a topic; a `creationId` marks a creation."""
    if "creationId" in raw:
        return ContainerCreationMessage.from_json(raw)
    return ContainerDeletionMessage.from_json(raw)


# --- invoker → scheduler ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerCreationAckMessage:
    transid: TransactionId
    creation_id: str
    invocation_namespace: str
    action: FullyQualifiedEntityName
    revision: str
    action_metadata: dict[str, Any]
    root_invoker_index: InvokerInstanceId
    scheduler_host: str
    rpc_port: int
    retry_count: int = 0
    error: ContainerCreationError | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "transid": self.transid.to_json(),
            "creationId": self.creation_id,
            "invocationNamespace": self.invocation_namespace,
            "action": self.action.to_json(),
            "revision": self.revision,
            "actionMetaData": self.action_metadata,
            "rootInvokerIndex": self.root_invoker_index.to_json(),
            "schedulerHost": self.scheduler_host,
            "rpcPort": self.rpc_port,
            "retryCount": self.retry_count,
        }
        if self.error is not None:
            raw["error"] = self.error.value
        if self.reason is not None:
            raw["reason"] = self.reason
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ContainerCreationAckMessage:
        error = raw.get("error")
        return cls(
            transid=TransactionId.from_json(raw["transid"]),
            creation_id=raw["creationId"],
            invocation_namespace=raw["invocationNamespace"],
            action=FullyQualifiedEntityName.from_json(raw["action"]),
            revision=raw.get("revision") or "",
            action_metadata=raw.get("actionMetaData", {}),
            root_invoker_index=InvokerInstanceId.from_json(raw["rootInvokerIndex"]),
            scheduler_host=raw["schedulerHost"],
            rpc_port=int(raw["rpcPort"]),
            retry_count=int(raw.get("retryCount", 0)),
            error=ContainerCreationError.parse(error) if error else None,
            reason=raw.get("reason"),
        )


# --- acks to the controller (`completed{N}`) --------------------------------------------


@dataclass(frozen=True, slots=True)
class CompletionAck:
    """One of OpenWhisk's three acknowledgements, told apart by which parts it has.

    combined = frees the slot and carries the result; completion = frees the slot
    only; result = carries the result only. `activation` may be None when only the id
    travels (the "shrunk" form).
    """

    transid: TransactionId
    activation_id: str
    activation: WhiskActivation | None
    is_system_error: bool
    instance: dict[str, Any] | None

    @property
    def frees_slot(self) -> bool:
        return self.instance is not None

    @property
    def has_result(self) -> bool:
        return self.activation is not None

    @classmethod
    def combined(
        cls,
        transid: TransactionId,
        activation: WhiskActivation,
        instance: dict[str, Any],
    ) -> CompletionAck:
        system = activation.response.status == 3
        return cls(transid, activation.activation_id, activation, system, instance)

    @classmethod
    def completion(
        cls,
        transid: TransactionId,
        activation_id: str,
        is_system_error: bool,
        instance: dict[str, Any],
    ) -> CompletionAck:
        return cls(transid, activation_id, None, is_system_error, instance)

    @classmethod
    def result(
        cls, transid: TransactionId, activation: WhiskActivation
    ) -> CompletionAck:
        return cls(transid, activation.activation_id, activation, False, None)

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"transid": self.transid.to_json()}
        if self.activation is not None:
            raw["response"] = self.activation.to_json()
        if self.instance is not None:
            raw["instance"] = self.instance
            raw["isSystemError"] = self.is_system_error
            if self.activation is None:
                raw["activationId"] = self.activation_id
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CompletionAck:
        transid = TransactionId.from_json(raw["transid"])
        response = raw.get("response")
        activation = None
        activation_id = raw.get("activationId", "")
        if isinstance(response, dict):
            activation = WhiskActivation.from_json(response)
            activation_id = activation.activation_id
        elif isinstance(response, str):
            activation_id = response
        return cls(
            transid,
            activation_id,
            activation,
            bool(raw.get("isSystemError", False)),
            raw.get("instance"),
        )


def ack_for(
    msg: ActivationMessage, activation: WhiskActivation, instance: dict[str, Any]
) -> CompletionAck:
    """The ack a component sends for a finished activation: combined when blocking."""
    if msg.blocking:
        return CompletionAck.combined(msg.transid, activation, instance)
    system = activation.response.status == 3
    return CompletionAck.completion(msg.transid, msg.activation_id, system, instance)


# --- records kept in etcd --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchedulerEndpoints:
    host: str
    rpc_port: int
    #: OpenWhisk's actor-remoting port; Wisp carries queue RPCs on rpc_port and
    #: keeps the field for shape compatibility
    pekko_port: int = 0

    @property
    def rpc_endpoint(self) -> str:
        return f"{self.host}:{self.rpc_port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "rpcPort": self.rpc_port,
            "pekkoPort": self.pekko_port,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SchedulerEndpoints:
        return cls(str(raw["host"]), int(raw["rpcPort"]), int(raw.get("pekkoPort", 0)))


@dataclass(frozen=True, slots=True)
class SchedulerStates:
    sid: SchedulerInstanceId
    queue_size: int
    endpoints: SchedulerEndpoints

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid.to_json(),
            "queueSize": self.queue_size,
            "endpoints": self.endpoints.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SchedulerStates:
        return cls(
            SchedulerInstanceId.from_json(raw["sid"]),
            int(raw["queueSize"]),
            SchedulerEndpoints.from_json(raw["endpoints"]),
        )


class InvokerStatus(enum.Enum):
    HEALTHY = "up"
    UNHEALTHY = "unhealthy"
    OFFLINE = "down"


@dataclass(frozen=True, slots=True)
class InvokerResourceMessage:
    status: InvokerStatus
    free_memory_mb: int
    busy_memory_mb: int
    in_progress_memory_mb: int
    tags: tuple[str, ...] = ()
    dedicated_namespaces: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "freeMemory": self.free_memory_mb,
            "busyMemory": self.busy_memory_mb,
            "inProgressMemory": self.in_progress_memory_mb,
            "tags": list(self.tags),
            "dedicatedNamespaces": list(self.dedicated_namespaces),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> InvokerResourceMessage:
        try:
            status = InvokerStatus(raw.get("status"))
        except ValueError:
            status = InvokerStatus.OFFLINE
        return cls(
            status,
            int(raw.get("freeMemory", 0)),
            int(raw.get("busyMemory", 0)),
            int(raw.get("inProgressMemory", 0)),
            tuple(raw.get("tags", [])),
            tuple(raw.get("dedicatedNamespaces", [])),
        )


# --- FetchActivation answers ---------------------------------------------------------------


class FetchError(enum.Enum):
    NO_ACTIVATION_MESSAGE = "NoActivationMessage"
    NO_MEMORY_QUEUE = "NoMemoryQueue"
    ACTION_MISMATCH = "ActionMismatch"


_FETCH_ERROR_JSON = {
    FetchError.NO_ACTIVATION_MESSAGE: (
        "noActivationMessage",
        "no activation message exist",
    ),
    FetchError.NO_MEMORY_QUEUE: ("noMemoryQueue", "no memory queue exist"),
    FetchError.ACTION_MISMATCH: ("actionMisMatch", "action version does not match"),
}


@dataclass(frozen=True, slots=True)
class FetchResult:
    """`{"message": <ActivationMessage> | <error with a "type">}` on the wire."""

    message: ActivationMessage | None = None
    error: FetchError | None = None

    def to_json(self) -> dict[str, Any]:
        if self.message is not None:
            return {"message": self.message.to_json()}
        assert self.error is not None
        field_name, text = _FETCH_ERROR_JSON[self.error]
        return {"message": {field_name: text, "type": self.error.value}}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FetchResult:
        inner = raw["message"]
        if "type" in inner and "activationId" not in inner:
            return cls(error=FetchError(inner["type"]))
        return cls(message=ActivationMessage.from_json(inner))


NO_ACTIVATION = FetchResult(error=FetchError.NO_ACTIVATION_MESSAGE)
NO_MEMORY_QUEUE = FetchResult(error=FetchError.NO_MEMORY_QUEUE)
ACTION_MISMATCH = FetchResult(error=FetchError.ACTION_MISMATCH)


WARM_UP_ACTION = FullyQualifiedEntityName("whisk.system", "warmUp")


def is_warm_up(fqn: FullyQualifiedEntityName) -> bool:
    return fqn.path == WARM_UP_ACTION.path and fqn.name == WARM_UP_ACTION.name


@dataclass(frozen=True, slots=True)
class CreateQueueRequest:
    """Controller → scheduler: make sure a queue exists for this action."""

    invocation_namespace: str
    action: FullyQualifiedEntityName
    revision: str
    action_metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "invocationNamespace": self.invocation_namespace,
            "fqn": self.action.to_json(),
            "revision": self.revision,
            "whiskActionMetaData": self.action_metadata,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CreateQueueRequest:
        return cls(
            raw["invocationNamespace"],
            FullyQualifiedEntityName.from_json(raw["fqn"]),
            raw.get("revision") or "",
            raw.get("whiskActionMetaData", {}),
        )
