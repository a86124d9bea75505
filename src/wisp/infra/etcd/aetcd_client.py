"""AetcdClient: the EtcdClient protocol over a real etcd server, through `aetcd`.

Keys and values cross this boundary as text; every request has a deadline; every
aetcd or gRPC exception becomes a `CoordinationError`. Watches use one gRPC stream
each, so a broken stream fails only the watches on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from wisp.core.errors import (
    CoordinationError,
    CoordinationUnavailable,
    LeaseNotFound,
    RevisionCompacted,
)
from wisp.infra.etcd.client import EventType, KeyValue, Lease, WatchEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 2379

#: gRPC channel settings: no proxy for etcd, quick reconnects after a restart, and
#: keepalive pings (no more often than etcd's default 5 s minimum) on open streams
_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.enable_http_proxy": 0,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
}

_UNAVAILABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_hosts(hosts: str) -> list[Endpoint]:
    """`host:port[,host:port...]` → endpoints; a missing port means 2379."""
    endpoints = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [v6-address]:port
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            endpoints.append(Endpoint(host, int(port) if port else DEFAULT_PORT))
        except ValueError:
            raise CoordinationError(f"bad etcd address {item!r}") from None
    if not endpoints:
        raise CoordinationError(f"no etcd address in {hosts!r}")
    return endpoints


def translate(
    exc: BaseException, *, lease_id: int = 0, revision: int = 0
) -> CoordinationError:
    """The CoordinationError for any exception raised by aetcd or gRPC."""
    if isinstance(exc, CoordinationError):
        return exc
    if isinstance(exc, TimeoutError | aetcd.WatchTimeoutError):
        return CoordinationUnavailable("etcd did not answer in time")
    if isinstance(exc, aetcd.RevisionCompactedError):
        return RevisionCompacted(revision or exc.compacted_revision)
    code, details = _status(exc)
    if "lease not found" in details:
        return LeaseNotFound(lease_id)
    if "revision has been compacted" in details:
        return RevisionCompacted(revision)
    if code in _UNAVAILABLE_CODES or isinstance(
        exc, aetcd.ConnectionFailedError | aetcd.ConnectionTimeoutError | OSError
    ):
        return CoordinationUnavailable(f"etcd unavailable: {details}")
    return CoordinationError(f"etcd failed: {details}")


def _status(exc: BaseException) -> tuple[grpc.StatusCode | None, str]:
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, grpc.aio.AioRpcError):
            return candidate.code(), candidate.details() or ""
    return None, str(exc) or type(exc).__name__


def _range(prefix: str) -> tuple[bytes, bytes]:
    """The [key, range_end) of every key starting with `prefix`."""
    if not prefix:
        return b"\0", b"\0"
    key = prefix.encode()
    return key, prefix_range_end(key)


def _refused(exc: BaseException) -> bool:
    """True for gRPC's UNAVAILABLE (typically: no connection), which gRPC itself
    treats as safe to retry."""
    code, _ = _status(exc)
    return code is grpc.StatusCode.UNAVAILABLE or isinstance(
        exc, aetcd.ConnectionFailedError
    )


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _key_value(kv: Any) -> KeyValue:
    return KeyValue(
        key=_text(kv.key),
        value=_text(kv.value),
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )


class AetcdWatch:
    """One etcd watch on its own gRPC stream; iterate for WatchEvents."""

    def __init__(self, call: Any, key: str) -> None:
        self._call = call
        self._key = key
        self._cancelled = False
        self._client_closed = False

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[WatchEvent]:
        while True:
            response = await self._read()
            if response is None:
                return
            if response.compact_revision:
                raise RevisionCompacted(response.compact_revision)
            if response.canceled:
                if self._cancelled:
                    return
                raise CoordinationError(
                    f"etcd cancelled the watch of {self._key}: {response.cancel_reason}"
                )
            for event in response.events:
                yield _watch_event(event)

    async def _read(self) -> Any:
        """The next response; None once this watch was cancelled."""
        try:
            response = await self._call.read()
        except asyncio.CancelledError:
            # A locally cancelled gRPC call raises CancelledError in read(); only a
            # cancellation of the reading task itself must propagate.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            if self._client_closed:
                raise CoordinationError("etcd client closed") from None
            if self._cancelled:
                return None
            raise CoordinationUnavailable(f"watch of {self._key} cancelled") from None
        except Exception as exc:
            if self._client_closed:
                raise CoordinationError("etcd client closed") from exc
            if self._cancelled:
                return None
            raise translate(exc) from exc
        if response is grpc.aio.EOF:
            if self._cancelled:
                return None
            raise CoordinationUnavailable(f"watch stream of {self._key} ended")
        return response

    async def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def close(self) -> None:
        """The client is closing: the iteration raises CoordinationError."""
        self._client_closed = True
        self._call.cancel()


def _watch_event(event: Any) -> WatchEvent:
    prev = _text(event.prev_kv.value) if event.HasField("prev_kv") else ""
    if event.type == rpc.Event.EventType.DELETE:
        return WatchEvent(
            EventType.DELETE, _text(event.kv.key), prev, prev, event.kv.mod_revision
        )
    return WatchEvent(
        EventType.PUT,
        _text(event.kv.key),
        _text(event.kv.value),
        prev,
        event.kv.mod_revision,
    )


class AetcdClient:
    """An EtcdClient talking to etcd servers; the first host that answers is used,
    and a connection failure moves on to the next one."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        request_timeout_s: float = 5.0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if not endpoints:
            raise CoordinationError("no etcd endpoint")
        self._endpoints = endpoints
        self._timeout_s = request_timeout_s
        self._username = username
        self._password = password
        self._clients: dict[int, aetcd.Client] = {}
        self._index = 0
        self._closed = False
        self._watches: weakref.WeakSet[AetcdWatch] = weakref.WeakSet()

    @classmethod
    def from_hosts(cls, hosts: str, *, request_timeout_s: float = 5.0) -> AetcdClient:
        return cls(parse_hosts(hosts), request_timeout_s=request_timeout_s)

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint requests go to now."""
        return self._endpoints[self._index]

    async def connect(self) -> None:
        """Find the first endpoint, in order, that answers; raise if none does."""
        errors = []
        for index in range(len(self._endpoints)):
            self._index = index
            try:
                await self.current_revision()
            except CoordinationError as exc:
                errors.append(f"{self._endpoints[index]}: {exc}")
                continue
            # A refusing endpoint hands the request on, so the answer may have come
            # from a later one: log the one in use.
            log.info("Connected to etcd at %s", self.endpoint)
            return
        self._index = 0
        raise CoordinationUnavailable("no etcd answered: " + "; ".join(errors))

    # --- reads --------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        response = await self._call(lambda c: c.get(key.encode()))
        return _key_value(response) if response is not None else None

    async def get_prefix(self, prefix: str) -> list[KeyValue]:
        start, end = _range(prefix)
        request = rpc.RangeRequest(key=start, range_end=end)
        response = await self._range(request)
        return [_key_value(kv) for kv in response.kvs]

    async def get_count(self, prefix: str) -> int:
        start, end = _range(prefix)
        request = rpc.RangeRequest(key=start, range_end=end, count_only=True)
        return int((await self._range(request)).count)

    async def current_revision(self) -> int:
        request = rpc.RangeRequest(key=b"\0", count_only=True)
        return int((await self._range(request)).header.revision)

    # --- writes -------------------------------------------------------------------

    async def put(self, key: str, value: str, lease: int = 0) -> int:
        response = await self._call(
            lambda c: c.put(key.encode(), value.encode(), lease=lease or None),
            lease_id=lease,
        )
        return int(response.header.revision)

    async def delete(self, key: str) -> bool:
        response = await self._call(lambda c: c.delete(key.encode()))
        return response is not None

    async def delete_prefix(self, prefix: str) -> int:
        start, end = _range(prefix)
        request = rpc.DeleteRangeRequest(key=start, range_end=end)

        async def run(c: aetcd.Client) -> Any:
            return await c.kvstub.DeleteRange(
                request, timeout=self._timeout_s, metadata=c.metadata
            )

        return int((await self._call(run, connect=True)).deleted)

    async def put_txn(
        self, key: str, value: str, cmp_version: int, lease: int = 0
    ) -> bool:
        raw = key.encode()

        async def run(c: aetcd.Client) -> bool:
            succeeded, _ = await c.transaction(
                compare=[c.transactions.version(raw) == cmp_version],
                success=[c.transactions.put(raw, value.encode(), lease=lease or None)],
                failure=[],
            )
            return bool(succeeded)

        return await self._call(run, lease_id=lease)

    async def compare_and_swap(self, key: str, expected: str, value: str) -> bool:
        raw = key.encode()
        # aetcd's transaction helpers cannot keep the key's lease (ignore_lease), so
        # this request is built from etcd's own messages.
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=raw,
                    result=rpc.Compare.EQUAL,
                    target=rpc.Compare.VALUE,
                    value=expected.encode(),
                )
            ],
            success=[
                rpc.RequestOp(
                    request_put=rpc.PutRequest(
                        key=raw, value=value.encode(), ignore_lease=True
                    )
                )
            ],
        )

        async def run(c: aetcd.Client) -> bool:
            response = await c.kvstub.Txn(
                request, timeout=self._timeout_s, metadata=c.metadata
            )
            return bool(response.succeeded)

        return await self._call(run, connect=True)

    async def compact(self, revision: int) -> None:
        """Drop the history before `revision` (tests and maintenance)."""
        await self._call(lambda c: c.compact(revision, physical=True))

    # --- leases -------------------------------------------------------------------

    async def grant(self, ttl_s: int) -> Lease:
        lease = await self._call(lambda c: c.lease(ttl_s))
        return Lease(int(lease.id), int(lease.ttl))

    async def revoke(self, lease_id: int) -> None:
        await self._call(lambda c: c.revoke_lease(lease_id), lease_id=lease_id)

    async def keep_alive_once(self, lease_id: int) -> int:
        async def run(c: aetcd.Client) -> int:
            call = c.leasestub.LeaseKeepAlive(
                timeout=self._timeout_s, metadata=c.metadata
            )
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                reply = await call.read()
            finally:
                call.cancel()
            if reply is grpc.aio.EOF:
                raise CoordinationUnavailable("lease keep-alive stream ended")
            if reply.TTL <= 0:
                raise LeaseNotFound(lease_id)
            return int(reply.TTL)

        return await self._call(run, lease_id=lease_id, connect=True)

    # --- watches ------------------------------------------------------------------

    async def watch(
        self, key: str, *, prefix: bool = False, start_revision: int = 0
    ) -> AetcdWatch:
        if prefix:
            start, end = _range(key)
        else:
            start, end = key.encode(), b""
        if start_revision > 0:
            await self._check_history(start, end, start_revision)
        create = rpc.WatchCreateRequest(
            key=start, range_end=end, start_revision=start_revision, prev_kv=True
        )

        async def run(c: aetcd.Client) -> AetcdWatch:
            call = rpc.WatchStub(c.channel).Watch(metadata=c.metadata)
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                first = await call.read()
            except BaseException:
                call.cancel()
                raise
            if first is grpc.aio.EOF or not first.created or first.canceled:
                call.cancel()
                if first is not grpc.aio.EOF and first.compact_revision:
                    raise RevisionCompacted(start_revision)
                reason = "" if first is grpc.aio.EOF else first.cancel_reason
                raise CoordinationError(f"etcd refused the watch of {key}: {reason}")
            watch = AetcdWatch(call, key)
            self._watches.add(watch)
            return watch

        return await self._call(run, revision=start_revision, connect=True)

    async def _check_history(self, start: bytes, end: bytes, revision: int) -> None:
        """Raise RevisionCompacted now rather than on the first read of the watch."""
        request = rpc.RangeRequest(
            key=start, range_end=end, revision=revision, count_only=True
        )
        try:
            await self._range(request, revision=revision)
        except RevisionCompacted:
            raise
        except CoordinationError as exc:
            if "future revision" not in str(exc):
                raise

    async def close(self) -> None:
        self._closed = True
        watches, self._watches = list(self._watches), weakref.WeakSet()
        for watch in watches:
            watch.close()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._timeout_s):
                    await client.close()

    # --- internals ----------------------------------------------------------------

    async def _range(self, request: Any, *, revision: int = 0) -> Any:
        async def run(c: aetcd.Client) -> Any:
            return await c.kvstub.Range(
                request, timeout=self._timeout_s, metadata=c.metadata
            )

        return await self._call(run, revision=revision, connect=True)

    async def _call(
        self,
        operation: Callable[[aetcd.Client], Awaitable[T]],
        *,
        lease_id: int = 0,
        revision: int = 0,
        connect: bool = False,
    ) -> T:
        """Run one request, bounded by the request timeout, on the current endpoint;
        an endpoint that refuses the connection passes the request to the next."""
        if self._closed:
            raise CoordinationError("etcd client closed")
        first = self._index
        count = len(self._endpoints)
        error: CoordinationError | None = None
        for step in range(count):
            index = (first + step) % count
            client = self._client(index)
            try:
                async with asyncio.timeout(self._timeout_s):
                    if connect:
                        await client.connect()
                    result = await operation(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = translate(exc, lease_id=lease_id, revision=revision)
                if not isinstance(error, CoordinationUnavailable):
                    raise error from exc
                if count == 1 or not _refused(exc):
                    # Timed out: the request may have been applied, so it is not
                    # repeated elsewhere; the next request goes to the next host.
                    self._switch(first, (index + 1) % count)
                    raise error from exc
                continue
            self._switch(first, index)
            return result
        assert error is not None
        raise error

    def _client(self, index: int) -> aetcd.Client:
        client = self._clients.get(index)
        if client is None:
            endpoint = self._endpoints[index]
            client = aetcd.Client(
                host=endpoint.host,
                port=endpoint.port,
                username=self._username,
                password=self._password,
                timeout=self._timeout_s,
                options=_CHANNEL_OPTIONS,
            )
            self._clients[index] = client
        return client

    def _switch(self, current: int, index: int) -> None:
        if index != current and self._index == current:
            log.warning(
                "etcd at %s unavailable; using %s",
                self._endpoints[current],
                self._endpoints[index],
            )
            self._index = index
