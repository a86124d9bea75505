"""CreationJobManager: in-progress keys, acks, retries, timeouts (CreationJobManagerTests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from wisp.config.load import load_config
from wisp.core.ids import InvokerInstanceId, TransactionId
from wisp.core.messages import (
    ContainerCreationAckMessage,
    ContainerCreationError,
    ContainerCreationMessage,
    encode,
)
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.messaging.memory import MemoryBroker
from wisp.scheduler.container.creation_jobs import CreationJobManager

from ..fakes import ACTION, FQN, NS, FakeDms, FakeQueue, creation, metadata, until

pytestmark = pytest.mark.timeout(10)

KEYS = EtcdKeys()
WHISK = ContainerCreationError.WHISK_ERROR
DEVELOPER = ContainerCreationError.DB_FETCH_ERROR


def in_progress_key(cid: str, revision: str = "1-aaa") -> str:
    return KEYS.in_progress_container(NS, FQN, revision, "0", cid)


def ack(
    cid: str,
    *,
    error: ContainerCreationError | None = None,
    retry_count: int = 0,
    reason: str | None = None,
) -> ContainerCreationAckMessage:
    return ContainerCreationAckMessage(
        transid=TransactionId.system("ack"),
        creation_id=cid,
        invocation_namespace=NS,
        action=ACTION,
        revision="1-aaa",
        action_metadata=metadata(),
        root_invoker_index=InvokerInstanceId(0),
        scheduler_host="127.0.0.1",
        rpc_port=1,
        retry_count=retry_count,
        error=error,
        reason=reason,
    )


@dataclass
class Harness:
    jobs: CreationJobManager
    dms: FakeDms
    queue: FakeQueue
    broker: MemoryBroker
    rescheduled: list[ContainerCreationMessage] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    async def send_ack(self, message: ContainerCreationAckMessage) -> None:
        await self.broker.publish("creationAck0", encode(message.to_json()))


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    config = load_config(
        overrides={
            "scheduler.in_progress_job_retention_s": 0.2,
            "scheduler.blackbox_multiple": 3,
            "scheduler.creation_retry_base_ms": 10,
            "scheduler.creation_max_retries": 2,
        }
    ).scheduler
    broker = MemoryBroker()
    dms = FakeDms()
    queue = FakeQueue(NS, ACTION, "1-aaa", metadata())
    rescheduled: list[ContainerCreationMessage] = []
    finished: list[str] = []

    def lookup(ns: str, fqn: str, rev: str) -> Any:
        return queue if (ns, fqn, rev) == (NS, FQN, "1-aaa") else None

    jobs = CreationJobManager(
        config=config,
        sid="0",
        keys=KEYS,
        dms=dms,  # type: ignore[arg-type]
        consumer=await broker.consumer("creationAck0", "creationAck0", 128),
        lookup=lookup,
        reschedule=rescheduled.append,
        on_finished=finished.append,
    )
    await jobs.start()
    yield Harness(jobs, dms, queue, broker, rescheduled, finished)
    await jobs.stop()


async def test_register_writes_the_in_progress_key_without_failover(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))

    assert harness.dms.register_calls == [(in_progress_key("c1"), "", False)]
    assert harness.jobs.in_progress == {"c1"}


async def test_registering_a_known_creation_id_again_changes_nothing(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))

    harness.jobs.register(creation("c1", retry_count=1))

    assert len(harness.dms.register_calls) == 1


async def test_success_ack_deletes_the_key_and_tells_the_queue(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))

    await harness.send_ack(ack("c1"))
    await until(lambda: harness.queue.succeeded)

    assert harness.queue.succeeded == ["c1"]
    assert harness.dms.unregistered == [in_progress_key("c1")]
    assert harness.finished == ["c1"]
    assert harness.jobs.in_progress == frozenset()


async def test_whisk_error_is_rescheduled_with_same_id_and_next_retry_count(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))

    await harness.send_ack(ack("c1", error=WHISK, retry_count=0))
    await until(lambda: harness.rescheduled)

    assert [(m.creation_id, m.retry_count) for m in harness.rescheduled] == [("c1", 1)]
    assert harness.dms.unregistered == []
    assert harness.queue.failed == []


async def test_whisk_error_after_the_last_retry_fails_the_creation(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))

    await harness.send_ack(ack("c1", error=WHISK, retry_count=2, reason="no room"))
    await until(lambda: harness.queue.failed)

    assert harness.queue.failed == [("c1", WHISK, "no room")]
    assert harness.dms.unregistered == [in_progress_key("c1")]
    assert harness.rescheduled == []


async def test_retries_end_after_max_retries_and_the_queue_hears_once(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))

    # Every attempt fails again with a whisk error, as an invoker without room would.
    for retry in range(3):
        await harness.send_ack(ack("c1", error=WHISK, retry_count=retry))
        if retry < 2:
            await until(lambda r=retry: len(harness.rescheduled) == r + 1)
    await until(lambda: harness.queue.failed)
    await asyncio.sleep(0.05)

    assert [m.retry_count for m in harness.rescheduled] == [1, 2]
    assert len(harness.queue.failed) == 1
    assert harness.queue.failed[0][1] is WHISK


async def test_developer_error_fails_at_once_with_the_reason(harness: Harness) -> None:
    harness.jobs.register(creation("c1"))

    await harness.send_ack(ack("c1", error=DEVELOPER, reason="document is missing"))
    await until(lambda: harness.queue.failed)

    assert harness.queue.failed == [("c1", DEVELOPER, "document is missing")]
    assert harness.rescheduled == []


async def test_error_without_reason_reports_unknown_reason(harness: Harness) -> None:
    harness.jobs.register(creation("c1"))

    await harness.send_ack(ack("c1", error=DEVELOPER))
    await until(lambda: harness.queue.failed)

    assert harness.queue.failed == [("c1", DEVELOPER, "unknown reason")]


async def test_ack_for_unknown_creation_only_deletes_its_key(harness: Harness) -> None:
    await harness.send_ack(ack("ghost", error=DEVELOPER))
    await until(lambda: harness.dms.unregistered)

    assert harness.dms.unregistered == [in_progress_key("ghost")]
    assert harness.queue.failed == []
    assert harness.queue.succeeded == []


async def test_missing_ack_times_out_once_with_timeout_error(harness: Harness) -> None:
    harness.jobs.register(creation("c1"))

    await until(lambda: harness.queue.failed, timeout_s=2)
    await harness.send_ack(ack("c1"))
    await asyncio.sleep(0.05)

    assert [(cid, err) for cid, err, _ in harness.queue.failed] == [
        ("c1", ContainerCreationError.TIMEOUT_ERROR)
    ]
    assert "timeout waiting for the ack of c1" in harness.queue.failed[0][2]
    assert harness.queue.succeeded == []
    assert harness.dms.unregistered.count(in_progress_key("c1")) == 2


async def test_blackbox_creation_waits_retention_times_multiple(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("plain"))
    harness.jobs.register(creation("box", meta=metadata(kind="blackbox")))

    await until(lambda: harness.queue.failed, timeout_s=2)
    first = [cid for cid, _, _ in harness.queue.failed]
    await until(lambda: len(harness.queue.failed) == 2, timeout_s=2)

    assert first == ["plain"]
    assert [cid for cid, _, _ in harness.queue.failed] == ["plain", "box"]


async def test_timeout_during_retry_backoff_ends_the_creation_once(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))
    harness.jobs.creation_error(creation("c1", retry_count=0), WHISK, "lost")

    await until(lambda: harness.queue.failed, timeout_s=2)
    await asyncio.sleep(0.05)

    assert len(harness.queue.failed) == 1


async def test_unparsable_ack_is_dropped_and_later_acks_still_count(
    harness: Harness,
) -> None:
    harness.jobs.register(creation("c1"))

    await harness.broker.publish("creationAck0", b"{not json")
    await harness.send_ack(ack("c1"))
    await until(lambda: harness.queue.succeeded)

    assert harness.queue.succeeded == ["c1"]


async def test_outcome_without_a_queue_still_cleans_up(harness: Harness) -> None:
    harness.jobs.register(creation("c1", revision="9-zzz"))

    harness.jobs.creation_error(creation("c1", revision="9-zzz"), DEVELOPER, "gone")

    assert harness.dms.unregistered == [in_progress_key("c1", "9-zzz")]
    assert harness.jobs.in_progress == frozenset()
