"""The thin CLI against a real standalone server: create, invoke, read the record."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.standalone import StandaloneProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def wisp(server: StandaloneProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wisp", *args, "--apihost", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_creates_invokes_and_reads_the_activation(
    standalone: StandaloneProcess, tmp_path: Path
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code = tmp_path / "hello.py"
    code.write_text("def main(args):\n    return {'hi': args.get('who')}\n")

    created = wisp(standalone, "action", "create", name, str(code))
    invoked = wisp(standalone, "action", "invoke", name, "-p", "who", "Ada", "-r")
    blocking = wisp(standalone, "action", "invoke", name, "-p", "who", "Bo", "-b")
    record = json.loads(blocking.stdout)
    fetched = wisp(standalone, "activation", "get", record["activationId"])

    assert created.returncode == 0, created.stderr
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == {"hi": "Ada"}
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["response"]["result"] == {"hi": "Bo"}


def test_cli_reports_an_unknown_action_with_exit_code(
    standalone: StandaloneProcess,
) -> None:
    result = wisp(
        standalone, "action", "invoke", f"missing-{uuid.uuid4().hex[:6]}", "-r"
    )

    assert result.returncode != 0
    assert "does not exist" in result.stderr
