"""The keys a leading queue owns: flags written only when owned and changed, deleted
once, and the leader key taken back (or given up) when it vanishes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, cast

import pytest

from wisp.core.messages import SchedulerEndpoints
from wisp.infra.etcd.client import EventType, WatchEvent
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.watcher import WatchCallback, WatcherService
from wisp.scheduler.queue.leadership import LeaderKeys

pytestmark = pytest.mark.timeout(5)

KEYS = EtcdKeys("whisk")
NS = "alice"
FQN = "bob/utils/resize"
LEADER_KEY = KEYS.queue_leader(NS, FQN)
NS_KEY = KEYS.namespace_throttling(NS)
ACTION_KEY = KEYS.action_throttling(NS, FQN)


class FakeDms:
    def __init__(self, *, initial_result: bool = True) -> None:
        self.initial_result = initial_result
        self.writes: list[tuple[str, str]] = []
        self.initial: list[tuple[str, str]] = []
        self.deleted: list[str] = []

    async def register_initial_data(
        self, key: str, value: str, *, failover: bool = True
    ) -> bool:
        self.initial.append((key, value))
        return self.initial_result

    def register_data(self, key: str, value: str, *, failover: bool = True) -> None:
        self.writes.append((key, value))

    def unregister_data(self, key: str) -> None:
        self.deleted.append(key)


class FakeWatcher:
    def __init__(self) -> None:
        self.on_delete: dict[str, WatchCallback] = {}

    def watch(
        self,
        key: str,
        *,
        prefix: bool,
        name: str,
        on_put: WatchCallback | None = None,
        on_delete: WatchCallback | None = None,
    ) -> None:
        if on_delete is not None:
            self.on_delete[key] = on_delete

    def unwatch(self, key: str, *, prefix: bool, name: str) -> None:
        self.on_delete.pop(key, None)

    def delete(self, key: str) -> None:
        self.on_delete[key](WatchEvent(EventType.DELETE, key, "", "x", 7))


class Harness:
    def __init__(self, *, initial_result: bool = True) -> None:
        self.dms = FakeDms(initial_result=initial_result)
        self.watcher = FakeWatcher()
        self.lost = 0
        self.leading = True
        self.tasks: list[asyncio.Task[None]] = []
        self.keys = LeaderKeys(
            name="q",
            invocation_namespace=NS,
            fqn=FQN,
            keys=KEYS,
            endpoints=SchedulerEndpoints("127.0.0.1", 13001),
            dms=cast(DataManagementService, self.dms),
            watcher=cast(WatcherService, self.watcher),
            watch_name="test",
            may_lead=lambda: self.leading,
            spawn=self.spawn,
            on_lost=self.on_lost,
        )

    def spawn(self, coro: Coroutine[Any, Any, None], role: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=role)
        self.tasks.append(task)
        return task

    def on_lost(self) -> None:
        self.lost += 1


def test_action_flag_is_written_only_when_it_changes() -> None:
    h = Harness()
    h.keys.owns = True

    h.keys.set_action_flag(True)
    h.keys.set_action_flag(True)
    h.keys.set_action_flag(False)

    assert h.dms.writes == [(ACTION_KEY, "true"), (ACTION_KEY, "false")]


def test_flags_are_not_written_by_a_queue_that_does_not_own_them() -> None:
    h = Harness()

    h.keys.set_namespace_flag(True)
    h.keys.set_action_flag(True)

    assert h.dms.writes == []


def test_unregister_deletes_the_three_keys_once_and_stops_owning() -> None:
    h = Harness()
    h.keys.owns = True

    h.keys.unregister()
    h.keys.unregister()

    assert sorted(h.dms.deleted) == sorted([LEADER_KEY, NS_KEY, ACTION_KEY])
    assert h.keys.owns is False


async def test_a_vanished_leader_key_is_taken_back_by_its_leader() -> None:
    h = Harness(initial_result=True)
    h.keys.owns = True
    h.keys.watch_leader()

    h.watcher.delete(LEADER_KEY)
    await asyncio.gather(*h.tasks)

    assert [key for key, _ in h.dms.initial] == [LEADER_KEY]
    assert '"127.0.0.1"' in h.dms.initial[0][1]
    assert h.keys.owns is True
    assert h.lost == 0


async def test_a_leader_key_taken_by_another_scheduler_is_given_up() -> None:
    h = Harness(initial_result=False)
    h.keys.owns = True
    h.keys.watch_leader()

    h.watcher.delete(LEADER_KEY)
    await asyncio.gather(*h.tasks)

    assert h.keys.owns is False
    assert h.lost == 1


async def test_a_queue_that_no_longer_leads_ignores_the_vanished_key() -> None:
    h = Harness()
    h.keys.owns = True
    h.keys.watch_leader()
    h.leading = False

    h.watcher.delete(LEADER_KEY)

    assert h.tasks == []
    assert h.dms.initial == []
