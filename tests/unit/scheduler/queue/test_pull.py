"""The backlog of waiting activations and the registry of container long-polls."""

from __future__ import annotations

import pytest

from wisp.core.activation import ActivationMessage
from wisp.core.entity import FullyQualifiedEntityName, Identity
from wisp.core.ids import ControllerInstanceId, TransactionId, new_activation_id
from wisp.core.messages import NO_ACTIVATION, NO_MEMORY_QUEUE, FetchResult
from wisp.scheduler.queue.pull import Backlog, Entry, PollRegistry

pytestmark = pytest.mark.timeout(5)


def entry(enqueued: float = 0.0) -> Entry:
    msg = ActivationMessage(
        transid=TransactionId.new(),
        action=FullyQualifiedEntityName("bob/utils", "resize", "0.0.1"),
        revision="1-aaa",
        user=Identity("alice-subject", "alice", "uuid-alice", "key"),
        activation_id=new_activation_id(),
        root_controller_index=ControllerInstanceId("0"),
        blocking=False,
    )
    return Entry(msg, enqueued)


# --- backlog ----------------------------------------------------------------------------


def test_backlog_takes_waited_activations_from_the_head_only() -> None:
    backlog = Backlog()
    old, older_than_young, young = entry(0.0), entry(1.0), entry(5.0)
    for e in (old, older_than_young, young):
        backlog.append(e)

    taken = backlog.take_waited(now=6.0, threshold_s=5.0)

    assert taken == [old.msg, older_than_young.msg]
    assert backlog.activation_ids() == [young.msg.activation_id]


def test_backlog_stops_counting_at_the_first_young_activation() -> None:
    backlog = Backlog()
    for enqueued in (0.0, 9.0, 1.0):
        backlog.append(entry(enqueued))

    waited = backlog.count_waited(now=10.0, threshold_s=5.0)

    assert waited == 1


def test_backlog_puts_a_returned_activation_back_at_the_head() -> None:
    backlog = Backlog()
    first, second = entry(), entry()
    backlog.append(first)
    backlog.append(second)

    backlog.put_back(backlog.pop())

    assert backlog.take_all() == [first.msg, second.msg]
    assert len(backlog) == 0


# --- polls ------------------------------------------------------------------------------


async def test_offer_without_an_open_poll_is_refused() -> None:
    polls = PollRegistry()

    handed = polls.offer(entry())

    assert handed is False


async def test_offer_serves_warmed_containers_first_then_the_largest_id() -> None:
    polls = PollRegistry()
    cold_a = polls.open("c-a", warmed=False)
    warm = polls.open("c-b", warmed=True)
    cold_c = polls.open("c-c", warmed=False)
    first, second = entry(), entry()

    polls.offer(first)
    polls.offer(second)

    assert warm.future.result() == FetchResult(message=first.msg)
    assert cold_c.future.result() == FetchResult(message=second.msg)
    assert not cold_a.future.done()


async def test_a_new_poll_of_a_container_answers_its_previous_poll() -> None:
    polls = PollRegistry()
    previous = polls.open("c-1", warmed=False)

    polls.open("c-1", warmed=True)

    assert previous.future.result() == NO_ACTIVATION


async def test_abandoning_a_waiting_poll_cancels_it_and_returns_nothing() -> None:
    polls = PollRegistry()
    poll = polls.open("c-1", warmed=False)

    returned = polls.abandon(poll)

    assert returned is None
    assert poll.future.cancelled()
    assert polls.offer(entry()) is False


async def test_abandoning_a_served_poll_returns_the_activation_it_was_handed() -> None:
    polls = PollRegistry()
    poll = polls.open("c-1", warmed=False)
    handed = entry()
    polls.offer(handed)

    returned = polls.abandon(poll)

    assert returned is handed


async def test_ending_all_polls_answers_each_of_them() -> None:
    polls = PollRegistry()
    first = polls.open("c-1", warmed=False)
    second = polls.open("c-2", warmed=False)

    polls.end_all(NO_MEMORY_QUEUE)

    assert first.future.result() == NO_MEMORY_QUEUE
    assert second.future.result() == NO_MEMORY_QUEUE
    assert polls.offer(entry()) is False
