"""The ports a MemoryQueue is given: its parent (QueueManager) and the container creator
(ContainerManager). Defined here so the queue and the services meet at one contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from wisp.core.activation import ActivationMessage
from wisp.core.entity import FullyQualifiedEntityName
from wisp.core.messages import ContainerCreationMessage

if TYPE_CHECKING:
    from wisp.scheduler.queue.memory_queue import MemoryQueue


class QueueParent(Protocol):
    """Implemented by QueueManager."""

    def queue_removed(self, queue: MemoryQueue, *, outdated: bool) -> None:
        """The queue reached Removed; drop it from the pool."""
        ...

    def queue_outdated(self, queue: MemoryQueue) -> None:
        """The queue serves an old revision now: it stays in the pool (its containers
        still pull from it) but takes no new activations; they go to the newest."""
        ...

    def forward(self, msgs: list[ActivationMessage]) -> None:
        """Route these activations again (the queue is retiring); non-blocking."""
        ...


class ContainerCreator(Protocol):
    """Implemented by ContainerManager."""

    def create_containers(
        self, msgs: list[ContainerCreationMessage], memory_mb: int, invocation_ns: str
    ) -> None:
        """Place and send creations in the background.

        Each creation ends with exactly one call to queue.creation_succeeded(cid) or
        queue.creation_failed(cid, error, reason), made by ContainerManager or
        CreationJobManager through the queue pool.
        """
        ...

    def delete_containers(
        self,
        invocation_ns: str,
        fqn: FullyQualifiedEntityName,
        revision: str,
        action_metadata: dict[str, Any],
    ) -> None:
        """Ask the invokers holding containers of older revisions to remove them."""
        ...
