"""The etcd keys a leading MemoryQueue owns (its leader key and the namespace and
action throttle flags), and the leader-key watch that takes the key back if it vanishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from wisp.core.errors import CoordinationError
from wisp.core.messages import SchedulerEndpoints
from wisp.infra.etcd.client import WatchEvent
from wisp.infra.etcd.data_management import DataManagementService
from wisp.infra.etcd.keys import EtcdKeys
from wisp.infra.etcd.watcher import WatcherService

log = logging.getLogger(__name__)

_ETCD_TIMEOUT_S = 5.0
_RETAKE_BACKOFF_S = 0.5


def _flag(on: bool) -> str:
    return "true" if on else "false"


class LeaderKeys:
    """Writes, deletes and re-takes the keys of one (namespace, action) leader.

    `owns` says whether this queue may write (and must delete) them; a queue that
    hands over to a newer revision or another scheduler stops owning them.
    """

    def __init__(
        self,
        *,
        name: str,
        invocation_namespace: str,
        fqn: str,
        keys: EtcdKeys,
        endpoints: SchedulerEndpoints,
        dms: DataManagementService,
        watcher: WatcherService,
        watch_name: str,
        may_lead: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
        on_lost: Callable[[], None],
    ) -> None:
        """`may_lead` says whether the queue still wants to lead (not outdated, not
        retiring); `on_lost` retires it once another scheduler holds the leader key."""
        self._name = name
        self._endpoints = endpoints
        self._dms = dms
        self._watcher = watcher
        self._watch_name = watch_name
        self._may_lead = may_lead
        self._spawn = spawn
        self._on_lost = on_lost
        self._leader_key = keys.queue_leader(invocation_namespace, fqn)
        self._ns_throttle_key = keys.namespace_throttling(invocation_namespace)
        self._action_throttle_key = keys.action_throttling(invocation_namespace, fqn)

        self.owns = False
        #: the value of the action throttle flag this queue last wrote
        self.action_throttled = False
        self._watching_leader = False

    # --- throttle flags -------------------------------------------------------------

    async def register_namespace_flag(self) -> None:
        """Write the namespace flag off unless another queue of the namespace did."""
        key = self._ns_throttle_key
        try:
            async with asyncio.timeout(_ETCD_TIMEOUT_S):
                await self._dms.register_initial_data(key, "false", failover=False)
        except (CoordinationError, TimeoutError) as exc:
            log.warning("Queue %s: registering %s failed: %s", self._name, key, exc)

    def reset_action_flag(self) -> None:
        """Write the action flag off, owned or not (a new queue starts unthrottled)."""
        self._dms.register_data(self._action_throttle_key, "false", failover=False)

    def set_namespace_flag(self, on: bool) -> None:
        self._write(self._ns_throttle_key, _flag(on))

    def set_action_flag(self, on: bool) -> None:
        """Write the action flag when its value changes."""
        if on != self.action_throttled:
            self.action_throttled = on
            self._write(self._action_throttle_key, _flag(on))

    def unregister(self) -> None:
        """Delete the keys this queue owns, and stop owning them."""
        if not self.owns:
            return
        self.owns = False
        for key in (self._leader_key, self._ns_throttle_key, self._action_throttle_key):
            self._dms.unregister_data(key)

    def _write(self, key: str, value: str) -> None:
        if self.owns:
            self._dms.register_data(key, value, failover=False)

    # --- the leader key -------------------------------------------------------------

    def watch_leader(self) -> None:
        self._watcher.watch(
            self._leader_key,
            prefix=False,
            name=self._watch_name,
            on_delete=self._on_leader_deleted,
        )
        self._watching_leader = True

    def unwatch_leader(self) -> None:
        if self._watching_leader:
            self._watcher.unwatch(self._leader_key, prefix=False, name=self._watch_name)
            self._watching_leader = False

    def _leads(self) -> bool:
        return self.owns and self._may_lead()

    def _on_leader_deleted(self, _event: WatchEvent) -> None:
        if not self._leads():
            return
        self._spawn(self._retake(), "leader")

    async def _retake(self) -> None:
        """The leader key vanished (lease lost, etcd blip): take it again, or retire
        if another scheduler took it meanwhile."""
        value = json.dumps(self._endpoints.to_json(), separators=(",", ":"))
        while self._leads():
            try:
                async with asyncio.timeout(_ETCD_TIMEOUT_S):
                    restored = await self._dms.register_initial_data(
                        self._leader_key, value, failover=False
                    )
            except (CoordinationError, TimeoutError) as exc:
                log.warning(
                    "Queue %s: re-taking the leader key failed: %s", self._name, exc
                )
                await asyncio.sleep(_RETAKE_BACKOFF_S)
                continue
            if not self._leads():
                return
            if restored:
                log.info("Queue %s: leader key restored", self._name)
                return
            log.warning("Queue %s: another scheduler leads this action now", self._name)
            # The keys belong to the new leader: leave them as they are.
            self.owns = False
            self._on_lost()
            return
