"""FPCEntitlementProvider: namespace privilege, per-minute rate, throttle flags."""

from __future__ import annotations

import pytest

from wisp.config.model import LimitsConfig
from wisp.controller.entitlement import (
    NOT_AUTHORIZED,
    TOO_MANY_REQUESTS,
    FPCEntitlementProvider,
    RateThrottler,
    Right,
    per_minute_limit,
)
from wisp.core.entity import FullyQualifiedEntityName, Identity, UserLimits
from wisp.core.errors import ForbiddenError, ThrottledError

GUEST = Identity("guest", "guest", "uuid-guest", "key")
HELLO = FullyQualifiedEntityName("guest", "hello", "0.0.1")


class Clock:
    def __init__(self, now_s: float = 600.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def provider(
    per_minute: int = 0,
    flags: dict[tuple[str, str], bool] | None = None,
    clock: Clock | None = None,
) -> FPCEntitlementProvider:
    table = flags or {}
    return FPCEntitlementProvider(
        LimitsConfig(invocations_per_minute=per_minute),
        lambda ns, fqn: table.get((ns, fqn), False),
        clock=clock or Clock(),
    )


@pytest.mark.parametrize(
    ("calls", "limit", "expected"),
    [
        # (seconds of each call), limit, allowed per call
        ([0, 1, 2], 2, [True, True, False]),
        ([0, 59, 60, 61], 1, [True, False, True, False]),
        ([0, 30, 90, 95], 2, [True, True, True, True]),
        ([0], 0, [False]),
    ],
)
def test_rate_throttler_counts_within_the_wall_clock_minute(
    calls: list[float], limit: int, expected: list[bool]
) -> None:
    throttler = RateThrottler()

    allowed = [throttler.check("ns", limit, 600 + t)[0] for t in calls]

    assert allowed == expected


def test_rate_throttler_counts_namespaces_apart() -> None:
    throttler = RateThrottler()
    throttler.check("a", 1, 0)

    allowed_b, count_b = throttler.check("b", 1, 0)
    allowed_a, count_a = throttler.check("a", 1, 0)

    assert (allowed_b, count_b) == (True, 1)
    assert (allowed_a, count_a) == (False, 2)


@pytest.mark.parametrize(
    ("own", "system", "expected"),
    [(None, 0, None), (None, 60, 60), (10, 60, 10), (10, 0, 10), (0, 60, 0)],
)
def test_per_minute_limit_prefers_the_namespace_limit(
    own: int | None, system: int, expected: int | None
) -> None:
    identity = Identity("s", "ns", "u", "k", UserLimits(invocations_per_minute=own))

    assert (
        per_minute_limit(identity, LimitsConfig(invocations_per_minute=system))
        == expected
    )


def test_activate_over_the_per_minute_limit_is_throttled_with_counts() -> None:
    entitlement = provider(per_minute=2)
    entitlement.check(GUEST, Right.ACTIVATE, HELLO)
    entitlement.check(GUEST, Right.ACTIVATE, HELLO)

    with pytest.raises(ThrottledError) as caught:
        entitlement.check(GUEST, Right.ACTIVATE, HELLO)

    assert caught.value.status == 429
    assert caught.value.message == (
        "Too many requests in the last minute (count: 3, allowed: 2)."
    )


def test_rate_limit_resets_in_the_next_minute() -> None:
    clock = Clock()
    entitlement = provider(per_minute=1, clock=clock)
    entitlement.check(GUEST, Right.ACTIVATE, HELLO)

    clock.now_s += 60
    entitlement.check(GUEST, Right.ACTIVATE, HELLO)


@pytest.mark.parametrize("right", [Right.READ, Right.PUT, Right.DELETE])
def test_only_activate_is_throttled(right: Right) -> None:
    entitlement = provider(per_minute=1, flags={("guest", "guest/hello"): True})

    for _ in range(3):
        entitlement.check(GUEST, right, HELLO)


def test_throttle_flag_rejects_activate_with_too_many_requests() -> None:
    entitlement = provider(flags={("guest", "guest/hello"): True})

    with pytest.raises(ThrottledError, match=f"^{TOO_MANY_REQUESTS}$"):
        entitlement.check(GUEST, Right.ACTIVATE, HELLO)

    entitlement.check(GUEST, Right.ACTIVATE, FullyQualifiedEntityName("guest", "other"))


def test_rate_throttle_runs_before_the_flags() -> None:
    entitlement = provider(per_minute=1, flags={("guest", "guest/hello"): True})

    with pytest.raises(ThrottledError, match=TOO_MANY_REQUESTS):
        entitlement.check(GUEST, Right.ACTIVATE, HELLO)
    with pytest.raises(ThrottledError, match="in the last minute"):
        entitlement.check(GUEST, Right.ACTIVATE, HELLO)


@pytest.mark.parametrize(("path", "expected"), [("_", "guest"), ("guest", "guest")])
def test_namespace_of_resolves_the_callers_namespace(path: str, expected: str) -> None:
    assert provider().namespace_of(GUEST, path) == expected


def test_another_namespace_is_forbidden() -> None:
    with pytest.raises(ForbiddenError, match=NOT_AUTHORIZED) as caught:
        provider().namespace_of(GUEST, "alice")

    assert caught.value.status == 403
