"""A restart of standalone Wisp keeps actions and activation records (issue #2)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Api
from tests.support.standalone import StandaloneProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CODE = "def main(args):\n    return {'echo': args.get('v')}\n"


async def test_restart_keeps_actions_and_activation_records(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    timeout = aiohttp.ClientTimeout(total=60)

    with StandaloneProcess(data_dir) as first:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(session, first.url)
            await api.create_action("keeper", CODE)
            status, record = await api.invoke("keeper", {"v": 1})
            assert status == 200, record

    with StandaloneProcess(data_dir) as second:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(session, second.url)

            status, action = await api.request("GET", "/actions/keeper")
            assert status == 200
            assert action["exec"]["code"] == CODE
            status, old = await api.request(
                "GET", f"/activations/{record['activationId']}"
            )
            assert status == 200
            assert old["response"]["result"] == {"echo": 1}
            status, again = await api.invoke("keeper", {"v": 2}, result=True)
            assert status == 200
            assert again == {"echo": 2}


async def test_relative_data_dir_works(tmp_path: Path) -> None:
    timeout = aiohttp.ClientTimeout(total=60)

    with StandaloneProcess(Path("rel-data"), cwd=tmp_path) as server:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            api = Api(session, server.url)
            await api.create_action("rel", CODE)
            status, body = await api.invoke("rel", {"v": "x"}, result=True)

    assert status == 200, body
    assert body == {"echo": "x"}
    assert (tmp_path / "rel-data" / "wisp.db").exists()


def test_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"

    with StandaloneProcess(data_dir):
        second = StandaloneProcess(data_dir)
        with pytest.raises(RuntimeError) as refused:
            second.start(timeout_s=20)

    assert "is in use by another Wisp" in str(refused.value)
    assert second.proc is not None and second.proc.returncode == 1
