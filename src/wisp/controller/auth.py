"""Basic authentication of API callers: `uuid:key` → Identity, cached briefly.

The guest namespace exists from the first start with OpenWhisk standalone's
well-known guest key, so the OpenWhisk tooling works against Wisp unchanged.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from wisp.core.entity import Identity
from wisp.core.errors import AuthenticationError
from wisp.infra.store.entities import EntityStore

GUEST_IDENTITY = Identity(
    subject="guest",
    namespace="guest",
    uuid="23bc46b1-71f6-4ed5-8c54-816aa4f8c502",
    key="123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP",
)

INVALID_AUTH = "The supplied authentication is invalid"

#: how long a verified key is trusted without asking the store again
CACHE_TTL_S = 5.0
_CACHE_MAX = 1024


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """`Basic base64(uuid:key)` → (uuid, key); None when absent or malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    uuid, sep, key = text.partition(":")
    if not sep or not uuid or not key:
        return None
    return uuid, key


class Authenticator:
    """Verifies `Authorization` headers against the EntityStore."""

    def __init__(
        self,
        store: EntityStore,
        *,
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[Identity, float]] = {}

    async def authenticate(self, header: str | None) -> Identity:
        """The caller's identity; raises AuthenticationError (401)."""
        credentials = parse_basic_auth(header)
        if credentials is None:
            raise AuthenticationError(INVALID_AUTH)
        now = self._clock()
        cached = self._cache.get(credentials)
        if cached is not None and cached[1] > now:
            return cached[0]
        identity = await self._store.identity_by_key(*credentials)
        if identity is None:
            self._cache.pop(credentials, None)
            raise AuthenticationError(INVALID_AUTH)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[credentials] = (identity, now + self._ttl_s)
        return identity
