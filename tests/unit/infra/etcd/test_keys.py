"""EtcdKeys builds the key layout of OpenWhisk's EtcdKV, checked against the
reference examples (cluster `whisk`, namespace `alice`, action `bob/utils/resize`)."""

from __future__ import annotations

import pytest

from wisp.infra.etcd.keys import (
    EtcdKeys,
    invoker_id_from_invoker_key,
    invoker_id_from_warmed_key,
    last_segment,
    revision_from_container_key,
)

KEYS = EtcdKeys()
FQN = "bob/utils/resize"


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (KEYS.instance_lease("scheduler0"), "whisk/instance/scheduler0/lease"),
        (KEYS.scheduler("0"), "whisk/scheduler/0"),
        (KEYS.scheduler_prefix(), "whisk/scheduler/"),
        (KEYS.queue_leader("alice", FQN), "whisk/queue/alice/bob/utils/resize/leader"),
        (
            KEYS.queue_follower("alice", FQN, "1"),
            "whisk/queue/alice/bob/utils/resize/follower/1",
        ),
        (KEYS.namespace_throttling("alice"), "whisk/throttling/alice"),
        (
            KEYS.action_throttling("alice", FQN),
            "whisk/throttling/alice/bob/utils/resize",
        ),
        (
            KEYS.in_progress_container("alice", FQN, "4-9a", "0", "0f3c"),
            "whisk/in-progress/alice/bob/utils/resize/4-9a/scheduler/0/creationId/0f3c",
        ),
        (
            KEYS.existing_container("alice", FQN, "4-9a", 2, "wsk0_17"),
            "whisk/namespace/alice/bob/utils/resize/4-9a/invoker2/container/wsk0_17",
        ),
        (
            KEYS.warmed_container("alice", FQN, "4-9a", 2, "wsk0_12"),
            "whisk/warmed/alice/bob/utils/resize/4-9a/invoker/2/container/wsk0_12",
        ),
        (KEYS.invoker(2), "whisk/invokers/2"),
        (KEYS.invoker(2, "invoker2-host"), "whisk/invokers/2/invoker2-host"),
        (KEYS.invoker(2, "host", "shown"), "whisk/invokers/2/host/shown"),
    ],
)
def test_keys_match_the_openwhisk_layout(built: str, expected: str) -> None:
    assert built == expected


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (
            KEYS.in_progress_prefix("ns1", FQN),
            "whisk/in-progress/ns1/bob/utils/resize/",
        ),
        (
            KEYS.existing_prefix("ns1", FQN, "4-9a"),
            "whisk/namespace/ns1/bob/utils/resize/4-9a/",
        ),
        (KEYS.warmed_prefix(), "whisk/warmed/"),
        (KEYS.warmed_prefix("ns1", FQN), "whisk/warmed/ns1/bob/utils/resize/"),
        (KEYS.in_progress_prefix_by_namespace("ns1"), "whisk/in-progress/ns1/"),
        (KEYS.existing_prefix_by_namespace("ns1"), "whisk/namespace/ns1/"),
        (KEYS.invokers_prefix(), "whisk/invokers/"),
        (KEYS.queue_prefix(), "whisk/queue/"),
        (KEYS.throttling_prefix(), "whisk/throttling/"),
    ],
)
def test_prefixes_end_with_a_slash(built: str, expected: str) -> None:
    assert built == expected


def test_a_namespace_prefix_does_not_match_a_longer_namespace() -> None:
    key_in_ns10 = KEYS.existing_container("ns10", FQN, "1-a", 0, "c")

    assert not key_in_ns10.startswith(KEYS.existing_prefix_by_namespace("ns1"))
    assert key_in_ns10.startswith(KEYS.existing_prefix_by_namespace("ns10"))


def test_another_cluster_name_prefixes_every_key() -> None:
    keys = EtcdKeys("blue")

    assert keys.scheduler("0") == "blue/scheduler/0"
    assert keys.invokers_prefix() == "blue/invokers/"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("whisk/invokers/2", 2),
        ("whisk/invokers/12/invoker12-host", 12),
        ("whisk/invokers/x/host", -1),
        ("whisk/invokers", -1),
    ],
)
def test_invoker_id_from_invoker_key(key: str, expected: int) -> None:
    assert invoker_id_from_invoker_key(key) == expected


def test_container_keys_parse_back_to_their_parts() -> None:
    warmed = KEYS.warmed_container("alice", FQN, "4-9a", 7, "wsk0_12")
    existing = KEYS.existing_container("alice", FQN, "4-9a", 2, "wsk0_17")
    creation = KEYS.in_progress_container("alice", FQN, "4-9a", "0", "0f3c")

    assert invoker_id_from_warmed_key(warmed) == 7
    assert last_segment(existing) == "wsk0_17"
    assert last_segment(creation) == "0f3c"
    assert (
        revision_from_container_key(existing, KEYS.existing_prefix("alice", FQN))
        == "4-9a"
    )
