"""Builds the EtcdClient the configuration asks for: embedded or a real etcd."""

from __future__ import annotations

from wisp.config.model import EtcdConfig
from wisp.infra.etcd.aetcd_client import AetcdClient
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.memory import MemoryEtcd

MEMORY = "memory"


async def connect_etcd(config: EtcdConfig) -> EtcdClient:
    """`hosts = "memory"` → MemoryEtcd; else an AetcdClient connected to the first
    of the comma-separated `host:port` entries that answers."""
    if config.hosts.strip() == MEMORY:
        return MemoryEtcd()
    client = AetcdClient.from_hosts(
        config.hosts, request_timeout_s=config.request_timeout_s
    )
    try:
        await client.connect()
    except BaseException:
        await client.close()
        raise
    return client
