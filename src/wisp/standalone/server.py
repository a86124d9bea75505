"""Standalone Wisp: controller, scheduler and invoker as services of one process.

The roles run on embedded infrastructure (in-memory etcd and topics, SQLite, local
sandboxed action processes) unless the configuration names real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from pathlib import Path
from typing import IO

from wisp.config.model import WispConfig
from wisp.controller.service import Controller
from wisp.core.entity import Identity
from wisp.core.errors import WispError
from wisp.infra.etcd.client import EtcdClient
from wisp.infra.etcd.factory import connect_etcd
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.runtime.process import ProcessContainerFactory
from wisp.infra.store.memory import MemoryStore
from wisp.infra.store.sqlite import SqliteStore
from wisp.invoker.service import Invoker
from wisp.scheduler.service import Scheduler

log = logging.getLogger(__name__)

GUEST = Identity(
    subject="guest",
    namespace="guest",
    uuid="23bc46b1-71f6-4ed5-8c54-816aa4f8c502",
    key="123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP",
)


class StandaloneServer:
    """Builds the embedded infrastructure and the three roles; starts and stops them
    in order."""

    def __init__(self, config: WispConfig) -> None:
        self.config = config
        # Absolute, so that sandboxes and child processes agree on every path.
        self.data_dir = Path(config.store.data_dir).resolve()
        self._lock: DataDirLock | None = None
        self.etcd: EtcdClient | None = None
        self.store: SqliteStore | MemoryStore | None = None
        self.broker = MemoryBroker()
        self.scheduler: Scheduler | None = None
        self.invoker: Invoker | None = None
        self.controller: Controller | None = None
        self._factory: ProcessContainerFactory | None = None

    @property
    def port(self) -> int:
        assert self.controller is not None
        return self.controller.port

    async def start(self) -> None:
        config = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = DataDirLock(self.data_dir)
        self._lock.acquire()

        # Step 1: stores and coordination, with the guest namespace on first start.
        if config.store.backend == "memory":
            self.store = MemoryStore()
        else:
            self.store = await SqliteStore.open(self.data_dir / "wisp.db")
        if await self.store.identity_by_namespace(GUEST.namespace) is None:
            await self.store.put_identity(GUEST)
        self.etcd = await connect_etcd(config.etcd)

        # Step 2: the scheduler first, so that queues can exist before work arrives.
        self.scheduler = Scheduler(
            config,
            etcd=self.etcd,
            messaging=self.broker,
            entity_store=self.store,
            activation_store=self.store,
        )
        await self.scheduler.start()

        # Step 3: the invoker, which registers its resources and waits for creations.
        self._factory = ProcessContainerFactory(
            config.invoker.runtime,
            work_dir=self.data_dir / "containers",
            name_prefix=f"wsk{config.invoker.instance_id}",
        )
        self.invoker = Invoker(
            config,
            etcd=self.etcd,
            messaging=self.broker,
            entity_store=self.store,
            activation_store=self.store,
            container_factory=self._factory,
        )
        await self.invoker.start()

        # Step 4: the controller last: the API opens when everything behind it runs.
        self.controller = Controller(
            config,
            etcd=self.etcd,
            messaging=self.broker,
            entity_store=self.store,
            activation_store=self.store,
        )
        await self.controller.start()
        log.info(
            "Wisp standalone serving on http://%s:%d", config.controller.host, self.port
        )

    async def stop(self) -> None:
        # Reverse order: stop intake at the API, then the scheduler's queues, then the
        # invoker's containers, then close the shared clients.
        for name, role in (
            ("controller", self.controller),
            ("scheduler", self.scheduler),
            ("invoker", self.invoker),
        ):
            if role is None:
                continue
            try:
                await role.stop()
            except Exception:
                log.exception("Stopping the %s failed", name)
        if self._factory is not None:
            await self._factory.cleanup()
        await self.broker.close()
        if self.etcd is not None:
            await self.etcd.close()
        if self.store is not None:
            await self.store.close()
        if self._lock is not None:
            self._lock.release()


class DataDirInUse(WispError):
    """Another Wisp process serves from the same data dir."""


class DataDirLock:
    """An exclusive lock on the data dir, so that two servers never share it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "wisp.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise DataDirInUse(
                f"data dir {self.path.parent} is in use by another Wisp (pid {owner}); "
                "stop it or pass another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


async def serve(config: WispConfig) -> None:
    """Run standalone Wisp until SIGINT or SIGTERM."""
    server = StandaloneServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        print(
            f"Wisp standalone is up: http://{config.controller.host}:{server.port}",
            flush=True,
        )
        await stop.wait()
        log.info("Shutting down")
    finally:
        await server.stop()
