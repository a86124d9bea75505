"""With `--etcd`, the roles really keep their state in that etcd server (issue #3)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Api
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
