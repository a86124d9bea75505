"""Topic names shared by every role (one place, so nobody spells them twice)."""

from __future__ import annotations


def scheduler_topic(sid: str) -> str:
    """Controller → scheduler activations."""
    return f"scheduler{sid}"


def invoker_topic(invoker_id: int) -> str:
    """Scheduler → invoker container creation and deletion."""
    return f"invoker{invoker_id}"


def creation_ack_topic(sid: str) -> str:
    """Invoker → scheduler creation acks."""
    return f"creationAck{sid}"


def completed_topic(controller_id: str) -> str:
    """Invoker / scheduler → controller completion acks."""
    return f"completed{controller_id}"
