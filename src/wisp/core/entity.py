"""Entities: names, revisions, actions, limits and identities (pure data, no I/O).

JSON helpers keep OpenWhisk's field names: `exec`, `limits.timeout` (ms),
`limits.memory` (MB), `parameters` as a list of `{key, value}` pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from wisp.core.errors import BadRequestError

# --- names and revisions --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FullyQualifiedEntityName:
    """`path/name[@version]`; `path` is the owner namespace, optionally `/package`."""

    path: str
    name: str
    version: str | None = None
    binding: str | None = None

    @property
    def namespace(self) -> str:
        return self.path.split("/", 1)[0]

    def unversioned(self) -> str:
        """`owner/pkg/name`, the form used in etcd keys and queue identities."""
        return f"{self.path}/{self.name}"

    def __str__(self) -> str:
        text = self.unversioned()
        return f"{text}@{self.version}" if self.version else text

    def with_version(self, version: str | None) -> FullyQualifiedEntityName:
        return replace(self, version=version)

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"path": self.path, "name": self.name}
        if self.version:
            raw["version"] = self.version
        if self.binding:
            raw["binding"] = self.binding
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> FullyQualifiedEntityName:
        if isinstance(raw, str):
            return cls.parse(raw)
        return cls(
            str(raw["path"]), str(raw["name"]), raw.get("version"), raw.get("binding")
        )

    @classmethod
    def parse(cls, text: str) -> FullyQualifiedEntityName:
        text = text.strip("/")
        version = None
        if "@" in text:
            text, version = text.rsplit("@", 1)
        path, _, name = text.rpartition("/")
        if not path or not name:
            raise ValueError(f"not a fully qualified name: {text!r}")
        return cls(path, name, version or None)


def revision_generation(rev: str | None) -> int:
    """CouchDB-style ordering: the integer before the first `-`; empty sorts lowest."""
    if not rev:
        return -1
    head = rev.split("-", 1)[0]
    try:
        return int(head)
    except ValueError:
        return 0


def next_revision(rev: str | None, digest: str) -> str:
    return f"{max(revision_generation(rev), 0) + 1}-{digest[:32]}"


def bump_version(version: str) -> str:
    """Semantic patch bump as OpenWhisk does on every update: 0.0.1 → 0.0.2."""
    parts = version.split(".")
    try:
        parts[-1] = str(int(parts[-1]) + 1)
    except ValueError:
        return "0.0.1"
    return ".".join(parts)


# --- actions ----------------------------------------------------------------------------

SUPPORTED_KINDS: dict[str, str] = {
    "python:3": "python:3",
    "python:default": "python:3",
    "nodejs:20": "nodejs:20",
    "nodejs:default": "nodejs:20",
}


@dataclass(frozen=True, slots=True)
class LimitBounds:
    timeout_min_ms: int = 100
    timeout_max_ms: int = 300_000
    timeout_std_ms: int = 60_000
    memory_min_mb: int = 128
    memory_max_mb: int = 512
    memory_std_mb: int = 256
    logs_min_mb: int = 0
    logs_max_mb: int = 10
    logs_std_mb: int = 10
    concurrency_min: int = 1
    concurrency_max: int = 500
    concurrency_std: int = 1


DEFAULT_BOUNDS = LimitBounds()


@dataclass(frozen=True, slots=True)
class ActionLimits:
    timeout_ms: int = 60_000
    memory_mb: int = 256
    logs_mb: int = 10
    concurrency: int = 1
    #: `limits.instances`: most containers of this action at once (None = namespace's)
    instances: int | None = None

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "timeout": self.timeout_ms,
            "memory": self.memory_mb,
            "logs": self.logs_mb,
            "concurrency": self.concurrency,
        }
        if self.instances is not None:
            raw["instances"] = self.instances
        return raw

    @classmethod
    def from_json(cls, raw: Any, bounds: LimitBounds = DEFAULT_BOUNDS) -> ActionLimits:
        """Parse and validate user-supplied limits; raises BadRequestError."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise BadRequestError("limits must be a JSON object", field="limits")
        b = bounds
        timeout = _bounded(
            raw, "timeout", b.timeout_std_ms, b.timeout_min_ms, b.timeout_max_ms
        )
        memory = _bounded(
            raw, "memory", b.memory_std_mb, b.memory_min_mb, b.memory_max_mb
        )
        logs = _bounded(raw, "logs", b.logs_std_mb, b.logs_min_mb, b.logs_max_mb)
        conc = _bounded(
            raw, "concurrency", b.concurrency_std, b.concurrency_min, b.concurrency_max
        )
        instances = raw.get("instances")
        if instances is not None:
            instances = _bounded(raw, "instances", 1, 1, 10_000)
        return cls(timeout, memory, logs, conc, instances)


def _bounded(raw: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequestError(
            f"limits.{name} must be an integer", field=f"limits.{name}"
        )
    if not low <= value <= high:
        raise BadRequestError(
            f"limits.{name} {value} exceeds allowed threshold of [{low}, {high}]",
            field=f"limits.{name}",
        )
    return value


@dataclass(frozen=True, slots=True)
class Exec:
    kind: str
    code: str = ""
    main: str = "main"
    binary: bool = False

    def to_json(self, with_code: bool = True) -> dict[str, Any]:
        raw: dict[str, Any] = {"kind": self.kind, "binary": self.binary}
        if self.main != "main":
            raw["main"] = self.main
        if with_code:
            raw["code"] = self.code
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> Exec:
        if not isinstance(raw, dict):
            raise BadRequestError("exec must be a JSON object", field="exec")
        kind = raw.get("kind")
        if not isinstance(kind, str) or kind not in SUPPORTED_KINDS:
            allowed = ", ".join(sorted(SUPPORTED_KINDS))
            raise BadRequestError(
                f"kind '{kind}' is not supported; supported kinds: {allowed}",
                field="exec.kind",
            )
        code = raw.get("code")
        if not isinstance(code, str) or not code.strip():
            raise BadRequestError(
                "exec.code must be a non-empty string", field="exec.code"
            )
        main = raw.get("main", "main")
        if not isinstance(main, str) or not main.isidentifier():
            raise BadRequestError("exec.main must be an identifier", field="exec.main")
        return cls(SUPPORTED_KINDS[kind], code, main, bool(raw.get("binary", False)))


def key_value_list(raw: Any, what: str) -> dict[str, Any]:
    """OpenWhisk's `[{"key": k, "value": v}]` (a plain object is accepted too)."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if not isinstance(raw, list):
        raise BadRequestError(f"{what} must be a list of key/value pairs", field=what)
    out: dict[str, Any] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise BadRequestError(
                f"{what} must be a list of key/value pairs", field=what
            )
        out[item["key"]] = item.get("value")
    return out


def to_key_value_list(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in values.items()]


@dataclass(frozen=True, slots=True)
class WhiskAction:
    """An action document as stored; `rev` changes on every update."""

    namespace: str
    name: str
    exec: Exec
    parameters: dict[str, Any] = field(default_factory=dict)
    limits: ActionLimits = field(default_factory=ActionLimits)
    annotations: dict[str, Any] = field(default_factory=dict)
    version: str = "0.0.1"
    publish: bool = False
    rev: str = ""
    updated_ms: int = 0

    @property
    def fqn(self) -> FullyQualifiedEntityName:
        return FullyQualifiedEntityName(self.namespace, self.name, self.version)

    def to_json(self, with_code: bool = True) -> dict[str, Any]:
        annotations = dict(self.annotations)
        annotations.setdefault("exec", self.exec.kind.split(":")[0])
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "publish": self.publish,
            "exec": self.exec.to_json(with_code),
            "parameters": to_key_value_list(self.parameters),
            "limits": self.limits.to_json(),
            "annotations": to_key_value_list(annotations),
            "updated": self.updated_ms,
            "rev": self.rev,
        }

    def metadata_json(self) -> dict[str, Any]:
        """`whiskActionMetaData`: the document without code, as sent to invokers."""
        return self.to_json(with_code=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WhiskAction:
        limits_raw = raw.get("limits") or {}
        return cls(
            namespace=raw["namespace"],
            name=raw["name"],
            exec=Exec(
                raw["exec"]["kind"],
                raw["exec"].get("code", ""),
                raw["exec"].get("main", "main"),
                bool(raw["exec"].get("binary", False)),
            ),
            parameters=key_value_list(raw.get("parameters"), "parameters"),
            limits=ActionLimits(
                limits_raw.get("timeout", 60_000),
                limits_raw.get("memory", 256),
                limits_raw.get("logs", 10),
                limits_raw.get("concurrency", 1),
                limits_raw.get("instances"),
            ),
            annotations=key_value_list(raw.get("annotations"), "annotations"),
            version=raw.get("version", "0.0.1"),
            publish=bool(raw.get("publish", False)),
            rev=raw.get("rev", ""),
            updated_ms=int(raw.get("updated", 0)),
        )


# --- identities -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserLimits:
    invocations_per_minute: int | None = None
    concurrent_invocations: int | None = None

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        if self.invocations_per_minute is not None:
            raw["invocationsPerMinute"] = self.invocations_per_minute
        if self.concurrent_invocations is not None:
            raw["concurrentInvocations"] = self.concurrent_invocations
        return raw

    @classmethod
    def from_json(cls, raw: Any) -> UserLimits:
        raw = raw or {}
        return cls(raw.get("invocationsPerMinute"), raw.get("concurrentInvocations"))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who invokes: subject, namespace (name + uuid), key and limits."""

    subject: str
    namespace: str
    uuid: str
    key: str
    limits: UserLimits = field(default_factory=UserLimits)

    @property
    def authkey(self) -> str:
        return f"{self.uuid}:{self.key}"

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "namespace": {"name": self.namespace, "uuid": self.uuid},
            "authkey": {"api_key": self.authkey},
            "rights": ["READ", "PUT", "DELETE", "ACTIVATE"],
            "limits": self.limits.to_json(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Identity:
        uuid_, _, key = str(raw.get("authkey", {}).get("api_key", ":")).partition(":")
        return cls(
            subject=raw["subject"],
            namespace=raw["namespace"]["name"],
            uuid=raw["namespace"].get("uuid", uuid_),
            key=key,
            limits=UserLimits.from_json(raw.get("limits")),
        )
