"""With `--etcd`, the roles really keep their state in that etcd server (issue #3)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Api
from tests.support.etcd_server import EtcdServer
from tests.support.standalone import StandaloneProcess
from wisp.config.model import EtcdConfig
from wisp.infra.etcd.factory import connect_etcd

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.timeout(60)]


async def test_roles_register_leases_and_queue_leader_in_etcd(
    standalone: StandaloneProcess, api: Api
) -> None:
    if standalone.etcd_endpoint is None:
        pytest.skip("runs on the real-etcd standalone only")
    await api.create_action("on-etcd", "def main(args):\n    return {}\n")
    status, _ = await api.invoke("on-etcd")
    assert status == 200

    etcd = await connect_etcd(EtcdConfig(hosts=standalone.etcd_endpoint))
    try:
        keys = [kv.key for kv in await etcd.get_prefix("whisk/")]
    finally:
        await etcd.close()

    assert "whisk/instance/scheduler0/lease" in keys
    assert "whisk/instance/invoker0/lease" in keys
    assert "whisk/scheduler/0" in keys
    assert any(k.startswith("whisk/invokers/0") for k in keys)
    assert "whisk/queue/guest/guest/on-etcd/leader" in keys


def test_second_server_with_the_same_instance_ids_on_one_etcd_is_refused(
    tmp_path: Path,
) -> None:
    etcd = EtcdServer(tmp_path / "etcd")
    etcd.start()
    env = {"WISP__ETCD__LEASE_TTL_S": "2"}
    args = ("--etcd", etcd.endpoint)
    try:
        with StandaloneProcess(tmp_path / "a", env=env, extra_args=args):
            second = StandaloneProcess(tmp_path / "b", env=env, extra_args=args)
            with pytest.raises(RuntimeError) as refused:
                second.start(timeout_s=30)
    finally:
        etcd.stop()

    assert "scheduler0 is already running on this etcd" in str(refused.value)
    assert second.proc is not None and second.proc.returncode == 1


async def test_restart_after_a_crash_waits_out_the_old_lease_then_serves(
    tmp_path: Path,
) -> None:
    etcd = EtcdServer(tmp_path / "etcd")
    etcd.start()
    env = {"WISP__ETCD__LEASE_TTL_S": "2"}
    args = ("--etcd", etcd.endpoint)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        first = StandaloneProcess(tmp_path / "data", env=env, extra_args=args)
        first.start()
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(session, first.url)
            await api.create_action("crash", "def main(args):\n    return {'ok': 1}\n")
            status, _ = await api.invoke("crash")
            assert status == 200
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait(10)

        with StandaloneProcess(tmp_path / "data", env=env, extra_args=args) as again:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                status, body = await Api(session, again.url).invoke(
                    "crash", result=True
                )
    finally:
        etcd.stop()

    assert status == 200, body
    assert body == {"ok": 1}
