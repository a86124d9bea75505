"""The thin CLI (`wisp action ...`, `wisp activation ...`) against a real controller
on 127.0.0.1 with the fake scheduler."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from wisp.client import ClientDefaults, add_client_commands, run_client_command
from wisp.client.cli import DEFAULT_APIHOST, GUEST_AUTH, _param_value
from wisp.config.load import load_config
from wisp.controller.auth import GUEST_IDENTITY
from wisp.controller.service import Controller
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.store.memory import MemoryStore

from .conftest import FakeScheduler, controller_config

pytestmark = pytest.mark.timeout(20)

HELLO_CODE = "def main(args):\n    return args\n"
Cli = Callable[..., Awaitable[tuple[int, Any, str]]]


def parse(argv: list[str], defaults: ClientDefaults) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wisp")
    commands = parser.add_subparsers(dest="command", required=True)
    add_client_commands(commands, defaults)
    return parser.parse_args(argv)


@pytest.fixture
async def cli(
    etcd: MemoryEtcd,
    broker: MemoryBroker,
    store: MemoryStore,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Cli]:
    scheduler = FakeScheduler(etcd, broker, store)
    await scheduler.start()
    controller = Controller(
        controller_config(),
        etcd=etcd,
        messaging=broker,
        entity_store=store,
        activation_store=store,
    )
    await controller.start()
    defaults = ClientDefaults(apihost=f"127.0.0.1:{controller.port}")

    async def run(*argv: str) -> tuple[int, Any, str]:
        """(exit code, stdout parsed as JSON when it is, stderr)."""
        capsys.readouterr()
        code = await asyncio.to_thread(run_client_command, parse(list(argv), defaults))
        out, err = capsys.readouterr()
        try:
            return code, json.loads(out), err
        except ValueError:
            return code, out, err

    yield run
    await controller.stop()
    await scheduler.stop()


@pytest.fixture
def hello_py(tmp_path: Path) -> Path:
    path = tmp_path / "hello.py"
    path.write_text(HELLO_CODE)
    return path


async def test_action_lifecycle_through_the_cli(cli: Cli, hello_py: Path) -> None:
    code, created, _ = await cli(
        "action", "create", "hello", str(hello_py), "-p", "greeting", "hi",
        "--memory", "128", "--timeout", "5000",
    )  # fmt: skip
    assert code == 0
    assert created["exec"]["kind"] == "python:3"
    assert created["limits"]["memory"] == 128 and created["limits"]["timeout"] == 5000
    assert created["parameters"] == [{"key": "greeting", "value": "hi"}]

    code, updated, _ = await cli("action", "update", "hello", "-p", "count", "3")
    assert code == 0
    assert updated["version"] == "0.0.2"
    assert updated["parameters"] == [{"key": "count", "value": 3}]
    assert updated["exec"]["code"] == HELLO_CODE

    code, shown, _ = await cli("action", "get", "/guest/hello")
    assert code == 0 and shown["rev"] == updated["rev"]

    code, listed, _ = await cli("action", "list")
    assert code == 0 and [a["name"] for a in listed] == ["hello"]

    code, deleted, _ = await cli("action", "delete", "hello")
    assert code == 0 and deleted["name"] == "hello"

    code, out, err = await cli("action", "get", "hello")
    assert code == 1 and out == ""
    assert err.startswith("error: The requested resource does not exist.")


async def test_invoke_and_activation_commands(cli: Cli, hello_py: Path) -> None:
    await cli("action", "create", "hello", str(hello_py))

    code, result, _ = await cli(
        "action", "invoke", "hello", "-r", "-p", "name", "wisp", "-p", "n", "2"
    )
    assert code == 0
    assert result == {"echo": {"name": "wisp", "n": 2}}

    code, accepted, _ = await cli("action", "invoke", "hello")
    assert code == 0
    activation_id = accepted["activationId"]

    record: Any = None
    for _ in range(50):
        code, record, _ = await cli("activation", "get", activation_id)
        if code == 0:
            break
        await asyncio.sleep(0.02)
    assert code == 0 and record["activationId"] == activation_id

    code, response, _ = await cli("activation", "result", activation_id)
    assert code == 0 and response["result"] == {"echo": {}}

    code, logs, _ = await cli("activation", "logs", activation_id)
    assert code == 0 and logs == {"logs": ["stdout: ran hello"]}

    code, listed, _ = await cli("activation", "list", "hello")
    assert code == 0 and len(listed) == 2


async def test_failed_blocking_invoke_prints_the_record_and_fails(
    cli: Cli, hello_py: Path
) -> None:
    await cli("action", "create", "hello", str(hello_py))

    code, record, _ = await cli("action", "invoke", "hello", "-b", "-p", "mode", "fail")

    assert code == 1
    assert record["response"]["status"] == "application error"


async def test_wrong_key_prints_the_server_error(cli: Cli) -> None:
    code, out, err = await cli("action", "list", "--auth", "nobody:nothing")

    assert code == 1 and out == ""
    assert "The supplied authentication is invalid" in err


async def test_unknown_file_kind_is_refused_before_any_request(
    cli: Cli, tmp_path: Path
) -> None:
    script = tmp_path / "hello.txt"
    script.write_text("x")

    code, _, err = await cli("action", "create", "hello", str(script))

    assert code == 1
    assert "pass --kind" in err


def test_unreachable_server_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = parse(["action", "list"], ClientDefaults(apihost=f"http://127.0.0.1:{port}"))

    code = run_client_command(args)

    assert code == 1
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 3),
        ("true", True),
        ('{"a": 1}', {"a": 1}),
        ("hello", "hello"),
        ('"q"', "q"),
    ],
)
def test_parameter_values_are_json_when_they_parse(text: str, expected: Any) -> None:
    assert _param_value(text) == expected


def test_client_defaults_come_from_the_configuration_tree() -> None:
    config = load_config(
        environ={
            "WISP__CLIENT__APIHOST": "http://127.0.0.1:9999",
            "WISP__CLIENT__AUTH": "u:k",
        }
    )

    assert config.client.apihost == "http://127.0.0.1:9999"
    assert config.client.auth == "u:k"
    assert load_config(environ={}).client.apihost == DEFAULT_APIHOST
    assert load_config(environ={}).client.auth == GUEST_AUTH == GUEST_IDENTITY.authkey
