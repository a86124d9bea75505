"""Invoker placement tables (ContainerManagerTests' placement cases, no event loop)."""

from __future__ import annotations

import random

import pytest

from wisp.core.messages import ContainerCreationError, InvokerStatus
from wisp.scheduler.container.placement import (
    CreationDemand,
    InvokerHealth,
    Partitions,
    choose_invoker,
    partitions,
    reduce_memory,
    schedule,
    usable_invokers,
)

from ..fakes import creation, metadata

NO_INVOKERS = ContainerCreationError.NO_AVAILABLE_INVOKERS
NO_RESOURCE = ContainerCreationError.NO_AVAILABLE_RESOURCE_INVOKERS


class FirstRng(random.Random):
    """Always picks the first candidate, so tables can name the expected invoker."""

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return 0


def inv(
    iid: int, free: int = 1024, *tags: str, ns: tuple[str, ...] = ()
) -> InvokerHealth:
    return InvokerHealth(iid, free, tags=tags, dedicated_namespaces=ns)


def demand(
    cid: str = "c",
    memory: int = 256,
    tags: tuple[str, ...] = (),
    *,
    strict: bool = True,
    blackbox: bool = False,
) -> CreationDemand:
    return CreationDemand(cid, memory, tags, strict, blackbox)


def place(
    invokers: list[InvokerHealth],
    demands: list[CreationDemand],
    *,
    managed: float = 0.9,
    blackbox: float = 0.1,
    rng: random.Random | None = None,
) -> list[int | ContainerCreationError | None]:
    placed = schedule(
        invokers,
        demands,
        managed_fraction=managed,
        blackbox_fraction=blackbox,
        min_memory_mb=128,
        rng=rng or FirstRng(),
    )
    return [p.invoker_id if p.invoker_id is not None else p.error for p in placed]


@pytest.mark.parametrize(
    ("n", "managed", "blackbox", "expected"),
    [
        (0, 0.9, 0.1, Partitions((), ())),
        (1, 0.9, 0.1, Partitions((0,), (0,))),
        (2, 0.9, 0.1, Partitions((0, 1), (1,))),
        (3, 0.5, 0.5, Partitions((0, 1), (2,))),
        (10, 0.9, 0.1, Partitions(tuple(range(9)), (9,))),
        (10, 0.5, 0.5, Partitions(tuple(range(5)), tuple(range(5, 10)))),
        (10, 0.8, 0.1, Partitions(tuple(range(8)), (8, 9))),
        (10, 0.9, 0.05, Partitions(tuple(range(9)), (9,))),
        (5, 0.1, 0.1, Partitions((0,), (1, 2, 3, 4))),
        (4, 1.0, 1.0, Partitions((0, 1, 2, 3), (0, 1, 2, 3))),
    ],
)
def test_partitions_overlap_for_small_clusters_and_follow_fractions(
    n: int, managed: float, blackbox: float, expected: Partitions
) -> None:
    result = partitions(list(range(n)), managed, blackbox)

    assert result == expected


def test_usable_invokers_keep_healthy_ones_with_memory_serving_the_namespace() -> None:
    invokers = [
        inv(0),
        InvokerHealth(1, 1024, status=InvokerStatus.UNHEALTHY),
        InvokerHealth(2, 1024, status=InvokerStatus.OFFLINE),
        inv(3, 100),
        inv(4, ns=("alice",)),
        inv(5, ns=("carol",)),
    ]

    usable = usable_invokers(invokers, 256, "alice")

    assert [i.id for i in usable] == [0, 4]


def test_usable_invokers_without_namespace_ignore_dedication() -> None:
    usable = usable_invokers([inv(0, ns=("carol",))], 128, None)

    assert [i.id for i in usable] == [0]


@pytest.mark.parametrize(
    ("candidates", "memory", "expected"),
    [
        ([], 256, NO_INVOKERS),
        ([inv(0, 128), inv(1, 200)], 256, NO_RESOURCE),
        ([inv(0, 128), inv(1, 512)], 256, 1),
        ([inv(3, 256)], 256, 3),
    ],
)
def test_choose_invoker_picks_a_candidate_with_enough_memory(
    candidates: list[InvokerHealth], memory: int, expected: int | ContainerCreationError
) -> None:
    assert choose_invoker(candidates, memory, FirstRng()) == expected


def test_choose_invoker_picks_uniformly_among_fitting_candidates() -> None:
    candidates = [inv(0), inv(1), inv(2)]
    rng = random.Random(7)

    picks = {choose_invoker(candidates, 256, rng) for _ in range(200)}

    assert picks == {0, 1, 2}


@pytest.mark.parametrize(
    ("invoker_id", "memory", "expected"),
    [
        (0, 256, [(0, 768), (1, 512)]),
        (9, 256, [(0, 1024), (1, 512)]),
        (1, 400, [(0, 1024)]),
        (1, 384, [(0, 1024), (1, 128)]),
    ],
)
def test_reduce_memory_updates_or_drops_the_chosen_invoker(
    invoker_id: int, memory: int, expected: list[tuple[int, int]]
) -> None:
    result = reduce_memory([inv(0, 1024), inv(1, 512)], invoker_id, memory, 128)

    assert [(i.id, i.free_memory_mb) for i in result] == expected


@pytest.mark.parametrize(
    ("invokers", "demands", "expected"),
    [
        # choose invokers; one invoker is enough
        ([inv(0), inv(1), inv(2)], [demand("a")], [0]),
        ([inv(0)], [demand("a")], [0]),
        # no candidates at all
        ([], [demand("a")], [NO_INVOKERS]),
        # not enough memory anywhere in the managed partition and no tagged fallback
        ([inv(0, 128)], [demand("a", 256)], [NO_INVOKERS]),
        # exact tag matches; unmatched non-strict goes untagged; strict fails
        (
            [inv(0), inv(1, 1024, "gpu"), inv(2, 1024, "ssd")],
            [
                demand("a", tags=("gpu",)),
                demand("b", tags=("ssd",)),
                demand("c", tags=("fpga",), strict=False),
                demand("d", tags=("fpga",)),
            ],
            [1, 2, 0, NO_RESOURCE],
        ),
        # tagged invokers when no untagged invoker is available
        ([inv(1, 1024, "gpu")], [demand("a")], [1]),
        # non-strict: untagged first, then other tags, then nothing
        ([inv(0), inv(1, 1024, "gpu")], [demand("a", tags=("x",), strict=False)], [0]),
        ([inv(1, 1024, "gpu")], [demand("a", tags=("x",), strict=False)], [1]),
        ([], [demand("a", tags=("x",), strict=False)], [NO_INVOKERS]),
        # every required tag must be present
        (
            [inv(0, 1024, "gpu"), inv(1, 1024, "gpu", "ssd")],
            [demand("a", tags=("gpu", "ssd"))],
            [1],
        ),
        # blackbox actions go to the blackbox partition (the last invoker of 10)
        ([inv(i) for i in range(10)], [demand("a", blackbox=True)], [9]),
    ],
)
def test_schedule_places_creations_by_tags_partitions_and_memory(
    invokers: list[InvokerHealth],
    demands: list[CreationDemand],
    expected: list[int | ContainerCreationError],
) -> None:
    assert place(invokers, demands) == expected


def test_schedule_accumulates_memory_across_picks() -> None:
    invokers = [inv(0, 512), inv(1, 512)]

    result = place(invokers, [demand(c, 256) for c in "abcde"])

    # 0 takes two (512 → 256 → dropped below 128 after the second), then 1 takes two.
    assert result == [0, 0, 1, 1, NO_INVOKERS]


def test_schedule_never_overcommits_an_invoker_in_a_burst() -> None:
    invokers = [inv(i, 1024) for i in range(3)]

    result = place(
        invokers, [demand(str(k), 256) for k in range(20)], rng=random.Random(3)
    )

    per_invoker = {i: result.count(i) for i in range(3)}
    assert all(count <= 4 for count in per_invoker.values())
    assert sum(per_invoker.values()) == 12


def test_creation_demand_reads_memory_tags_policy_and_kind_from_metadata() -> None:
    meta = metadata(
        kind="blackbox",
        memory_mb=512,
        annotations={
            "invoker-resources": ["gpu", "ssd"],
            "invoker-resources-strict-policy": False,
        },
    )

    result = CreationDemand.of(creation("c9", meta=meta))

    assert result == CreationDemand("c9", 512, ("gpu", "ssd"), False, True)


def test_creation_demand_defaults_to_strict_untagged_managed() -> None:
    result = CreationDemand.of(creation("c1"))

    assert result == CreationDemand("c1", 256, (), True, False)
