"""AetcdClient without a server: address parsing, the translation of every foreign
error into Wisp's coordination errors, and an unreachable loopback port."""

from __future__ import annotations

import aetcd
import grpc
import pytest

from tests.support.etcd_server import free_port
from wisp.config.model import EtcdConfig
from wisp.core.errors import (
    CoordinationError,
    CoordinationUnavailable,
    LeaseNotFound,
    RevisionCompacted,
)
from wisp.infra.etcd.aetcd_client import AetcdClient, Endpoint, parse_hosts, translate
from wisp.infra.etcd.factory import connect_etcd
from wisp.infra.etcd.memory import MemoryEtcd


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, details=details)


def wrapped(error: aetcd.ClientError, cause: BaseException) -> aetcd.ClientError:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ("127.0.0.1:2379", [Endpoint("127.0.0.1", 2379)]),
        ("localhost", [Endpoint("localhost", 2379)]),
        (
            "127.0.0.1:1, 127.0.0.1:2,",
            [Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2)],
        ),
        ("[::1]:2380", [Endpoint("::1", 2380)]),
    ],
)
def test_parse_hosts_reads_comma_separated_addresses(
    hosts: str, expected: list[Endpoint]
) -> None:
    assert parse_hosts(hosts) == expected


@pytest.mark.parametrize("hosts", ["", " , ", "127.0.0.1:port"])
def test_parse_hosts_rejects_unusable_addresses(hosts: str) -> None:
    with pytest.raises(CoordinationError):
        parse_hosts(hosts)


LEASE_NOT_FOUND = "etcdserver: requested lease not found"
COMPACTED = "etcdserver: mvcc: required revision has been compacted"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (rpc_error(grpc.StatusCode.NOT_FOUND, LEASE_NOT_FOUND), LeaseNotFound),
        (wrapped(aetcd.ClientError(LEASE_NOT_FOUND), Exception()), LeaseNotFound),
        (rpc_error(grpc.StatusCode.OUT_OF_RANGE, COMPACTED), RevisionCompacted),
        (aetcd.RevisionCompactedError(12), RevisionCompacted),
        (
            rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"),
            CoordinationUnavailable,
        ),
        (
            rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
            CoordinationUnavailable,
        ),
        (
            wrapped(
                aetcd.ConnectionFailedError("refused"),
                rpc_error(grpc.StatusCode.UNAVAILABLE, "refused"),
            ),
            CoordinationUnavailable,
        ),
        (aetcd.ConnectionTimeoutError("slow"), CoordinationUnavailable),
        (aetcd.WatchTimeoutError(), CoordinationUnavailable),
        (TimeoutError(), CoordinationUnavailable),
        (ConnectionResetError("reset"), CoordinationUnavailable),
        (
            rpc_error(
                grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided"
            ),
            CoordinationError,
        ),
        (aetcd.InternalError("boom"), CoordinationError),
        (ValueError("anything else"), CoordinationError),
    ],
)
def test_every_foreign_error_becomes_a_coordination_error(
    raised: BaseException, expected: type[CoordinationError]
) -> None:
    error = translate(raised, lease_id=42, revision=7)

    assert type(error) is expected
    if isinstance(error, LeaseNotFound):
        assert error.lease_id == 42


def test_a_coordination_error_passes_through_unchanged() -> None:
    original = LeaseNotFound(5)

    assert translate(original) is original


async def test_connecting_to_a_port_nobody_listens_on_raises_unavailable() -> None:
    client = AetcdClient.from_hosts(f"127.0.0.1:{free_port()}", request_timeout_s=1.0)

    with pytest.raises(CoordinationUnavailable):
        await client.connect()
    with pytest.raises(CoordinationUnavailable):
        await client.put("k", "v")
    await client.close()


async def test_a_closed_client_refuses_requests() -> None:
    client = AetcdClient.from_hosts(f"127.0.0.1:{free_port()}", request_timeout_s=1.0)

    await client.close()

    with pytest.raises(CoordinationError, match="closed"):
        await client.get("k")


async def test_the_factory_gives_the_embedded_store_for_memory() -> None:
    etcd = await connect_etcd(EtcdConfig(hosts="memory"))

    assert isinstance(etcd, MemoryEtcd)
    await etcd.close()
