"""Invoker selection for container creations (the `schedule` policy of ContainerManager).

Pure functions over invoker health snapshots: partitions, tag filters, memory checks
and a random pick through an injectable `random.Random`. No I/O, no event loop.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from wisp.core.messages import (
    ContainerCreationError,
    ContainerCreationMessage,
    InvokerResourceMessage,
    InvokerStatus,
)

#: annotation listing the tags an invoker must carry for this action
RESOURCES_ANNOTATION = "invoker-resources"
#: annotation: false lets an action fall back to invokers without its tags
STRICT_POLICY_ANNOTATION = "invoker-resources-strict-policy"

_DEFAULT_ACTION_MEMORY_MB = 256


@dataclass(frozen=True, slots=True)
class InvokerHealth:
    """One invoker as placement sees it; `free_memory_mb` shrinks as picks land."""

    id: int
    free_memory_mb: int
    busy_memory_mb: int = 0
    tags: tuple[str, ...] = ()
    dedicated_namespaces: tuple[str, ...] = ()
    status: InvokerStatus = InvokerStatus.HEALTHY

    @classmethod
    def from_resource(
        cls, invoker_id: int, msg: InvokerResourceMessage
    ) -> InvokerHealth:
        return cls(
            invoker_id,
            msg.free_memory_mb,
            msg.busy_memory_mb,
            tuple(msg.tags),
            tuple(msg.dedicated_namespaces),
            msg.status,
        )


@dataclass(frozen=True, slots=True)
class CreationDemand:
    """What placement needs to know about one creation."""

    creation_id: str
    memory_mb: int
    required_tags: tuple[str, ...] = ()
    strict: bool = True
    blackbox: bool = False

    @classmethod
    def of(cls, msg: ContainerCreationMessage) -> CreationDemand:
        meta = msg.action_metadata
        annotations = annotations_of(meta)
        tags = annotations.get(RESOURCES_ANNOTATION) or []
        strict = annotations.get(STRICT_POLICY_ANNOTATION, True)
        return cls(
            msg.creation_id,
            action_memory_mb(meta),
            tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            strict is not False and str(strict).lower() != "false",
            is_blackbox(meta),
        )


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome for one creation: an invoker id, or the error explaining why not."""

    creation_id: str
    invoker_id: int | None = None
    error: ContainerCreationError | None = None


@dataclass(frozen=True, slots=True)
class Partitions:
    """Invoker ids of the managed and blackbox partitions (they may overlap)."""

    managed: tuple[int, ...]
    blackbox: tuple[int, ...]


# --- action metadata ---------------------------------------------------------------------


def annotations_of(meta: dict[str, Any]) -> dict[str, Any]:
    """Annotations of `whiskActionMetaData`, as a `{key, value}` list or a plain map."""
    raw = meta.get("annotations")
    if isinstance(raw, dict):
        return dict(raw)
    result: dict[str, Any] = {}
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and "key" in item:
                result[str(item["key"])] = item.get("value")
    return result


def action_memory_mb(meta: dict[str, Any]) -> int:
    limits = meta.get("limits")
    if isinstance(limits, dict):
        memory = limits.get("memory")
        if isinstance(memory, int) and not isinstance(memory, bool):
            return memory
    return _DEFAULT_ACTION_MEMORY_MB


def is_blackbox(meta: dict[str, Any]) -> bool:
    exec_ = meta.get("exec")
    return isinstance(exec_, dict) and exec_.get("kind") == "blackbox"


# --- selection ---------------------------------------------------------------------------


def usable_invokers(
    invokers: Iterable[InvokerHealth], min_memory_mb: int, invocation_ns: str | None
) -> list[InvokerHealth]:
    """Healthy invokers with enough free memory that may serve `invocation_ns`.

    `invocation_ns` None skips the dedicated-namespace filter.
    """
    return [
        inv
        for inv in invokers
        if inv.status is InvokerStatus.HEALTHY
        and inv.free_memory_mb >= min_memory_mb
        and (
            invocation_ns is None
            or not inv.dedicated_namespaces
            or invocation_ns in inv.dedicated_namespaces
        )
    ]


def partitions(
    untagged: Sequence[int], managed_fraction: float, blackbox_fraction: float
) -> Partitions:
    """Managed = the first share of untagged invokers, blackbox = the last share.

    Each partition has at least one invoker, so for a small cluster they overlap.
    """
    n = len(untagged)
    managed_share = min(max(managed_fraction, 0.0), 1.0)
    blackbox_share = max(1.0 - managed_share, min(1.0, blackbox_fraction))
    # Rounding guards against 10 * (1 - 0.9) = 0.9999999999999998.
    managed_count = max(1, math.ceil(round(n * managed_share, 9)))
    blackbox_count = max(1, math.floor(round(n * blackbox_share, 9)))
    return Partitions(
        tuple(untagged[:managed_count]),
        tuple(untagged[-blackbox_count:]) if n else (),
    )


def choose_invoker(
    candidates: Sequence[InvokerHealth], memory_mb: int, rng: random.Random
) -> int | ContainerCreationError:
    """A uniformly random candidate with enough memory, or the reason there is none."""
    if not candidates:
        return ContainerCreationError.NO_AVAILABLE_INVOKERS
    fitting = [c for c in candidates if c.free_memory_mb >= memory_mb]
    if not fitting:
        return ContainerCreationError.NO_AVAILABLE_RESOURCE_INVOKERS
    return fitting[rng.randrange(len(fitting))].id


def reduce_memory(
    invokers: Sequence[InvokerHealth],
    invoker_id: int,
    memory_mb: int,
    min_memory_mb: int,
) -> list[InvokerHealth]:
    """The list after placing `memory_mb` on `invoker_id`; drop it below the minimum."""
    result: list[InvokerHealth] = []
    for inv in invokers:
        if inv.id == invoker_id:
            left = inv.free_memory_mb - memory_mb
            if left < min_memory_mb:
                continue
            inv = replace(inv, free_memory_mb=left)
        result.append(inv)
    return result


def _pick(
    demand: CreationDemand,
    candidates: Sequence[InvokerHealth],
    parts: Partitions,
    rng: random.Random,
) -> int | ContainerCreationError:
    untagged = [c for c in candidates if not c.tags]
    tagged = [c for c in candidates if c.tags]
    if not demand.required_tags:
        part = set(parts.blackbox if demand.blackbox else parts.managed)
        wanted = [
            c for c in untagged if c.id in part and c.free_memory_mb >= demand.memory_mb
        ]
        if wanted:
            return choose_invoker(wanted, demand.memory_mb, rng)
        if tagged:
            return choose_invoker(tagged, demand.memory_mb, rng)
        return ContainerCreationError.NO_AVAILABLE_INVOKERS
    required = set(demand.required_tags)
    matching = [c for c in candidates if required.issubset(c.tags)]
    if matching:
        return choose_invoker(matching, demand.memory_mb, rng)
    if demand.strict:
        return ContainerCreationError.NO_AVAILABLE_RESOURCE_INVOKERS
    if untagged:
        return choose_invoker(untagged, demand.memory_mb, rng)
    if tagged:
        return choose_invoker(tagged, demand.memory_mb, rng)
    return ContainerCreationError.NO_AVAILABLE_INVOKERS


def schedule(
    invokers: Sequence[InvokerHealth],
    demands: Sequence[CreationDemand],
    *,
    managed_fraction: float,
    blackbox_fraction: float,
    min_memory_mb: int,
    rng: random.Random,
) -> list[Placement]:
    """Place each demand in order; every pick lowers that invoker's memory for the next.

    `invokers` are the usable ones (see `usable_invokers`), in a stable order.
    """
    untagged_ids = [inv.id for inv in invokers if not inv.tags]
    parts = partitions(untagged_ids, managed_fraction, blackbox_fraction)
    candidates = list(invokers)
    placements: list[Placement] = []
    for demand in demands:
        picked = _pick(demand, candidates, parts, rng)
        if isinstance(picked, ContainerCreationError):
            placements.append(Placement(demand.creation_id, error=picked))
            continue
        placements.append(Placement(demand.creation_id, invoker_id=picked))
        # DIVERGENCE(openwhisk): the original subtracts each pick from the original
        # list, so a burst can over-commit one invoker; reductions accumulate here.
        candidates = reduce_memory(candidates, picked, demand.memory_mb, min_memory_mb)
    return placements
