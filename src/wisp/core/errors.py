"""Wisp's error tree: every error the platform raises on purpose descends from here.

    WispError
    ├── UserInputError          bad input from an API caller (mapped to 4xx once)
    │   ├── AuthenticationError (401)
    │   ├── NotFoundError       (404)
    │   ├── ConflictError       (409)
    │   ├── BadRequestError     (400)
    │   ├── PayloadTooLargeError (413)
    │   └── ThrottledError      (429)
    ├── CoordinationError       etcd and its embedded twin
    │   ├── CoordinationUnavailable  (server unreachable or timed out)
    │   ├── LeaseNotFound            (the lease expired or was revoked)
    │   ├── InstanceInUse            (a live process holds this instance's name)
    │   └── RevisionCompacted        (a watch asked for history etcd no longer has)
    ├── MessagingError          broker adapters
    ├── StoreError              entity and activation stores
    ├── ContainerError          action containers and their runtimes
    │   ├── ContainerStartupError
    │   └── ContainerConnectionError
    └── ServiceUnavailable      no scheduler / invoker can take the work (503)

Foreign exceptions are translated into these at the adapter boundary in `infra/`.
"""

from __future__ import annotations


class WispError(Exception):
    """Root of every error Wisp raises on purpose."""


# --- user input ---------------------------------------------------------------


class UserInputError(WispError):
    """A caller sent something we refuse; carries the HTTP status to answer with."""

    status: int = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class AuthenticationError(UserInputError):
    status = 401


class ForbiddenError(UserInputError):
    status = 403


class NotFoundError(UserInputError):
    status = 404


class ConflictError(UserInputError):
    status = 409


class BadRequestError(UserInputError):
    status = 400


class PayloadTooLargeError(UserInputError):
    status = 413

    def __init__(self, size_bytes: int | None, limit_bytes: int) -> None:
        if size_bytes is None:
            size = "it exceeds"
        else:
            size = f"{size_bytes} bytes exceed"
        super().__init__(
            f"The request content is too large: {size} the limit of {limit_bytes} bytes."
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class ThrottledError(UserInputError):
    status = 429


# --- infrastructure -------------------------------------------------------------


class CoordinationError(WispError):
    """etcd (or the embedded store) refused or failed an operation."""


class CoordinationUnavailable(CoordinationError):
    """The coordination server could not be reached in time."""


class LeaseNotFound(CoordinationError):
    """The lease named in a request no longer exists (expired or revoked)."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"requested lease not found: {lease_id}")
        self.lease_id = lease_id


class InstanceInUse(CoordinationError):
    """Another live process holds the etcd lease marker of this instance name."""

    def __init__(self, instance: str, key: str) -> None:
        super().__init__(
            f"{instance} is already running on this etcd (its lease key {key} stays "
            "alive); give this process another instance id, or another cluster name "
            "(WISP__ETCD__CLUSTER_NAME)"
        )
        self.instance = instance
        self.key = key


class RevisionCompacted(CoordinationError):
    """A watch asked to start from a revision that was compacted away."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"required revision {revision} has been compacted")
        self.revision = revision


class MessagingError(WispError):
    """The message broker failed to accept or deliver a message."""


class StoreError(WispError):
    """The entity or activation store failed."""


class ContainerError(WispError):
    """An action container could not be created or talked to."""


class ContainerStartupError(ContainerError):
    """The container (sandboxed process) did not start."""


class ContainerConnectionError(ContainerError):
    """The container's runtime could not be reached or dropped the connection."""


class ServiceUnavailable(WispError):
    """No component can take the work right now (HTTP 503)."""
