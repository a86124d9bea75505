"""Container seam: what an invoker needs from an action container and its factory.

A container runs one action runtime that speaks OpenWhisk's action-proxy protocol
(`POST /init`, `POST /run`, log lines closed by sentinels). The standalone backend
(`process.ProcessContainerFactory`) runs each container as a sandboxed local process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

LOG_SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"


class RunOutcome(enum.Enum):
    """How an /init or /run call ended, before the invoker turns it into a status."""

    #: HTTP 200 with a JSON object or array
    OK = "ok"
    #: HTTP 200 with an object carrying "error" (application error)
    APPLICATION_ERROR = "application_error"
    #: non-200, non-JSON, JSON scalar, crash or init failure (developer error)
    DEVELOPER_ERROR = "developer_error"
    #: the call hit the action's time limit (developer error)
    TIMEOUT = "timeout"
    #: the runtime answered 503 or refused the connection: reschedule the activation
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: RunOutcome
    #: the JSON result for OK / APPLICATION_ERROR, else {"error": "<message>"}
    result: Any
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return max(0, self.end_ms - self.start_ms)


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """What to start: the runtime kind, memory and a readable name."""

    name: str
    kind: str
    memory_mb: int
    #: extra environment for the runtime process (e.g. __OW_API_HOST)
    env: dict[str, str] = field(default_factory=dict)


class Container(Protocol):
    @property
    def container_id(self) -> str: ...

    async def initialize(self, payload: dict[str, Any], timeout_s: float) -> RunResult:
        """POST /init with `{"value": payload}`; exactly once per container."""
        ...

    async def run(
        self, body: dict[str, Any], timeout_s: float, max_response_bytes: int
    ) -> RunResult:
        """POST /run with `body` (`value` plus context fields and `deadline`)."""
        ...

    async def logs(self, limit_bytes: int, wait_for_sentinel: bool) -> list[str]:
        """Log lines written since the last call, up to the sentinels, formatted as
        `<time> <stream>: <text>`; sentinel lines are left out."""
        ...

    async def suspend(self) -> None: ...

    async def resume(self) -> None: ...

    async def destroy(self) -> None: ...


class ContainerFactory(Protocol):
    async def create_container(self, spec: ContainerSpec) -> Container:
        """Start a container; raises ContainerStartupError."""
        ...

    async def cleanup(self) -> None:
        """Destroy every container this factory started (invoker shutdown)."""
        ...
