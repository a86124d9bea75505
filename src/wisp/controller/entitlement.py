"""FPCEntitlementProvider (module 2): who may do what, and the invoke throttles.

Privilege: a caller works in its own namespace (`_` names it). Throttles, for ACTIVATE
only: the per-minute rate per namespace, then the scheduler-written etcd flags that
the balancer mirrors (see `balancer.throttle_flag` for their precedence).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from wisp.config.model import LimitsConfig
from wisp.core.entity import FullyQualifiedEntityName, Identity
from wisp.core.errors import ForbiddenError, ThrottledError

log = logging.getLogger(__name__)

TOO_MANY_REQUESTS = "Too many requests"
NOT_AUTHORIZED = (
    "The supplied authentication is not authorized to access this resource."
)

#: (invocation namespace, unversioned fqn) → is the action throttled?
ThrottleCheck = Callable[[str, str], bool]


class Right(enum.Enum):
    READ = "READ"
    PUT = "PUT"
    DELETE = "DELETE"
    ACTIVATE = "ACTIVATE"


def too_many_per_minute(count: int, allowed: int) -> str:
    return f"Too many requests in the last minute (count: {count}, allowed: {allowed})."


class RateThrottler:
    """Counts requests per key in the current wall-clock minute (OpenWhisk's
    RateThrottler): the request is counted first and allowed while count <= limit."""

    def __init__(self) -> None:
        self._minute = -1
        self._counts: dict[str, int] = {}

    def check(self, key: str, limit: int, now_s: float) -> tuple[bool, int]:
        """(allowed, count including this request)."""
        minute = int(now_s // 60)
        if minute != self._minute:
            self._minute = minute
            self._counts.clear()
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        return count <= limit, count


def per_minute_limit(identity: Identity, limits: LimitsConfig) -> int | None:
    """The namespace's own limit wins (0 blocks it, as OpenWhisk's blacklist does);
    else the system limit, where 0 turns the rate throttle off."""
    own = identity.limits.invocations_per_minute
    if own is not None:
        return own
    return limits.invocations_per_minute if limits.invocations_per_minute > 0 else None


class FPCEntitlementProvider:
    def __init__(
        self,
        limits: LimitsConfig,
        throttle_check: ThrottleCheck,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = limits
        self._throttle_check = throttle_check
        self._clock = clock
        self._rate = RateThrottler()

    def namespace_of(self, identity: Identity, namespace: str) -> str:
        """The namespace a path names (`_` = the caller's); others' → 403."""
        if namespace in ("_", identity.namespace):
            return identity.namespace
        raise ForbiddenError(NOT_AUTHORIZED, field="namespace")

    def check(
        self,
        identity: Identity,
        right: Right,
        action: FullyQualifiedEntityName | None = None,
    ) -> None:
        """Raise ThrottledError (429) when an ACTIVATE must be refused."""
        if right is not Right.ACTIVATE:
            return

        # per-minute rate throttle (counted per namespace uuid, per controller)
        limit = per_minute_limit(identity, self._limits)
        if limit is not None:
            allowed, count = self._rate.check(identity.uuid, limit, self._clock())
            if not allowed:
                log.info("Namespace %s over its per-minute limit", identity.namespace)
                raise ThrottledError(too_many_per_minute(count, limit))

        # the schedulers' throttle flags
        if action is not None and self._throttle_check(
            identity.namespace, action.unversioned()
        ):
            log.info("Action %s throttled", action.unversioned())
            raise ThrottledError(TOO_MANY_REQUESTS)
