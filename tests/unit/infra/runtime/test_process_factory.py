"""ProcessContainerFactory and ProcessContainer: lifecycle, limits, sandbox."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from wisp.config.load import load_config
from wisp.config.model import RuntimeConfig
from wisp.core.errors import ContainerStartupError
from wisp.infra.runtime import logs as log_buffer
from wisp.infra.runtime.container import ContainerSpec, RunOutcome
from wisp.infra.runtime.process import (
    ContainerState,
    ProcessContainer,
    ProcessContainerFactory,
)
from wisp.infra.runtime.responses import EXITED_MESSAGE, MEMORY_MESSAGE
from wisp.infra.runtime.sandbox import bwrap_works
from wisp.infra.runtime.work_dirs import OWNER_FILE, Owner

pytestmark = pytest.mark.timeout(30)

StartAction = Callable[..., Awaitable[ProcessContainer]]
MakeFactory = Callable[..., ProcessContainerFactory]
MB = 1024 * 1024

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bwrap does not work here")


def runtime_config(**overrides: Any) -> RuntimeConfig:
    dotted = {f"invoker.runtime.{key}": value for key, value in overrides.items()}
    return load_config(environ={}, overrides=dotted).invoker.runtime


def run_body(value: Any) -> dict[str, Any]:
    return {"value": value, "namespace": "guest", "activation_id": "a1"}


def path_exists(path: pathlib.Path) -> bool:
    return path.exists()


def names_in(directory: pathlib.Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def factory_dir(root: pathlib.Path, name: str, owner: Owner) -> pathlib.Path:
    """A factory directory left with one container directory in it."""
    directory = root / name
    (directory / "wsk0_7_guest_old").mkdir(parents=True)
    (directory / OWNER_FILE).write_text(owner.to_json())
    return directory


def exited_process() -> Owner:
    """This process, as seen by a sweep, but under the pid of a child that exited."""
    child = subprocess.Popen(["/usr/bin/true"])
    child.wait()
    return dataclasses.replace(Owner.current(), pid=child.pid)


def processes_with(token: str) -> list[int]:
    """Host pids whose command line carries `token`."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def test_container_ids_are_readable_and_unique(
    factory: ProcessContainerFactory,
) -> None:
    spec = ContainerSpec(name="guest/hello-world", kind="python:3", memory_mb=128)

    first = await factory.create_container(spec)
    second = await factory.create_container(spec)

    assert first.container_id == "wsk0_1_guest_hello_world"
    assert second.container_id == "wsk0_2_guest_hello_world"


async def test_unknown_kind_fails_startup(factory: ProcessContainerFactory) -> None:
    spec = ContainerSpec(name="x", kind="cobol:85", memory_mb=128)

    with pytest.raises(ContainerStartupError, match="Unknown runtime kind 'cobol:85'"):
        await factory.create_container(spec)

    assert factory.containers == []


async def test_runtime_exiting_at_startup_reports_its_output(
    make_factory: MakeFactory,
) -> None:
    # `sleep -I -u <script> ...` exits at once complaining about its arguments.
    factory = make_factory(python_executable="/usr/bin/sleep")
    spec = ContainerSpec(name="x", kind="python:3", memory_mb=128)

    with pytest.raises(
        ContainerStartupError, match="exited before opening its port.*sleep"
    ):
        await factory.create_container(spec)

    assert factory.containers == []


async def test_runtime_not_listening_in_time_fails_startup(
    make_factory: MakeFactory,
) -> None:
    factory = make_factory(startup_timeout_s=0.001)
    spec = ContainerSpec(name="x", kind="python:3", memory_mb=128)

    with pytest.raises(ContainerStartupError, match="did not open its port within"):
        await factory.create_container(spec)

    assert factory.containers == []


async def test_destroy_stops_the_process_removes_work_dir_and_is_idempotent(
    start_action: StartAction, factory: ProcessContainerFactory
) -> None:
    container = await start_action("python:3", "def main(p):\n    return p\n")
    work_dir = container.work_dir
    existed = path_exists(work_dir)

    await container.destroy()
    await container.destroy()
    after = await container.run(run_body({}), 1.0, MB)

    assert container.state is ContainerState.DESTROYED
    assert container._process.returncode is not None
    assert existed and not path_exists(work_dir)
    assert after.outcome is RunOutcome.UNAVAILABLE
    assert factory.containers == []


async def test_cleanup_destroys_every_container(
    factory: ProcessContainerFactory,
) -> None:
    containers = [
        await factory.create_container(
            ContainerSpec(name=f"c{i}", kind=kind, memory_mb=128)
        )
        for i, kind in enumerate(["python:3", "nodejs:20"])
    ]

    await factory.cleanup()

    assert all(c.state is ContainerState.DESTROYED for c in containers)
    assert all(c._process.returncode is not None for c in containers)
    assert factory.containers == []


async def test_run_over_the_time_limit_times_out_and_breaks_the_container(
    start_action: StartAction,
) -> None:
    container = await start_action(
        "python:3", "import time\ndef main(p):\n    time.sleep(5)\n    return {}\n"
    )

    result = await container.run(run_body({}), 0.3, MB)

    assert result.outcome is RunOutcome.TIMEOUT
    assert result.result == {
        "error": "The action exceeded its time limits of 300 milliseconds."
    }
    assert 300 <= result.duration_ms < 1000
    assert container.state is ContainerState.BROKEN


async def test_init_over_the_time_limit_times_out(
    factory: ProcessContainerFactory,
) -> None:
    container = await factory.create_container(
        ContainerSpec(name="slow", kind="python:3", memory_mb=128)
    )
    code = "import time\ntime.sleep(5)\ndef main(p):\n    return {}\n"

    result = await container.initialize({"code": code, "main": "main"}, 0.25)

    assert result.outcome is RunOutcome.TIMEOUT
    assert result.result == {
        "error": "The action exceeded its time limits of 250 milliseconds "
        "during initialization."
    }


async def test_runtime_dying_mid_run_is_developer_error_then_unavailable(
    start_action: StartAction,
) -> None:
    container = await start_action(
        "python:3", "import os\ndef main(p):\n    os._exit(3)\n"
    )

    died = await container.run(run_body({}), 5.0, MB)
    after = await container.run(run_body({}), 5.0, MB)

    assert died.outcome is RunOutcome.DEVELOPER_ERROR
    assert died.result == {"error": EXITED_MESSAGE}
    assert container.state is ContainerState.BROKEN
    assert after.outcome is RunOutcome.UNAVAILABLE


async def test_response_over_the_limit_is_truncated_application_error(
    start_action: StartAction,
) -> None:
    container = await start_action(
        "python:3", "def main(p):\n    return {'x': 'y' * 5000}\n"
    )

    result = await container.run(run_body({}), 5.0, 100)

    assert result.outcome is RunOutcome.APPLICATION_ERROR
    assert result.result["error"].startswith(
        "The action produced a response that exceeded the allowed length: "
        '5009 > 100 bytes. The truncated response was: {"x": "yyy'
    )


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (
            "python:3",
            "def main(p):\n    hog = bytearray(512 * 1024 * 1024)\n    return {}\n",
        ),
        (
            "nodejs:20",
            "function main(p) { const a = []; for (;;) a.push({n: a.length}); }",
        ),
    ],
)
async def test_memory_hog_is_stopped_and_reported(
    kind: str, code: str, start_action: StartAction
) -> None:
    container = await start_action(kind, code, memory_mb=64)

    result = await container.run(run_body({}), 10.0, MB)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert result.result == {"error": MEMORY_MESSAGE}


async def test_open_files_are_limited(
    make_factory: MakeFactory, start_action: StartAction
) -> None:
    factory = make_factory(max_open_files=32)
    code = "def main(p):\n    files = [open('/dev/null') for _ in range(64)]\n    return {}\n"
    container = await start_action("python:3", code, on=factory)

    result = await container.run(run_body({}), 5.0, MB)

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert "Too many open files" in result.result["error"]


@needs_bwrap
async def test_processes_are_limited_inside_the_sandbox(
    make_factory: MakeFactory, start_action: StartAction
) -> None:
    factory = make_factory(max_processes=12, sandbox="bwrap")
    code = """
import subprocess
def main(p):
    children = []
    try:
        for _ in range(40):
            children.append(subprocess.Popen(["/usr/bin/sleep", "10"]))
    except OSError as exc:
        failure = str(exc)
    else:
        failure = None
    for child in children:
        child.kill()
        child.wait()
    return {"started": len(children), "failure": failure}
"""
    container = await start_action("python:3", code, on=factory)

    result = await container.run(run_body({}), 10.0, MB)

    assert result.outcome is RunOutcome.OK
    assert result.result["started"] < 12
    assert "Resource temporarily unavailable" in result.result["failure"]


async def test_suspend_stops_progress_and_resume_continues(
    start_action: StartAction,
) -> None:
    code = "import time\ndef main(p):\n    time.sleep(0.2)\n    return {'t': time.time()}\n"
    container = await start_action("python:3", code)
    running = asyncio.create_task(container.run(run_body({}), 5.0, MB))
    await asyncio.sleep(0.05)

    await container.suspend()
    await asyncio.sleep(0.6)
    stalled = not running.done()
    suspended_state = container.state
    resumed_at = time.time()
    await container.resume()
    result = await running

    assert stalled and suspended_state is ContainerState.SUSPENDED
    assert result.outcome is RunOutcome.OK
    assert result.result["t"] >= resumed_at
    assert container.state is ContainerState.RUNNING


@pytest.mark.parametrize("sandbox", ["none", pytest.param("bwrap", marks=needs_bwrap)])
async def test_destroy_kills_the_actions_children(
    sandbox: str, make_factory: MakeFactory, start_action: StartAction
) -> None:
    token = f"wisp-test-{uuid.uuid4().hex}"
    code = f"""
import subprocess
def main(p):
    child = subprocess.Popen(["/usr/bin/sh", "-c", "sleep 30; echo {token}"])
    return {{"child": child.pid}}
"""
    container = await start_action("python:3", code, on=make_factory(sandbox=sandbox))
    await container.run(run_body({}), 5.0, MB)
    before = processes_with(token)

    await container.destroy()
    await asyncio.sleep(0.05)

    # (sh may show up twice: its child has its command line until it execs sleep)
    assert before
    assert processes_with(token) == []


@needs_bwrap
async def test_sandbox_hides_the_host(
    make_factory: MakeFactory, start_action: StartAction
) -> None:
    code = """
import os
def main(p):
    return {
        "work": os.path.exists("/work"),
        "home": os.path.exists("/home"),
        "root": sorted(os.listdir("/root")),
        "shadow": os.path.exists("/etc/shadow"),
        "pids": sorted(int(n) for n in os.listdir("/proc") if n.isdigit()),
        "uid": os.getuid(),
        "init_environ_readable": os.access("/proc/1/environ", os.R_OK),
        "tmp_writable": os.access("/tmp", os.W_OK),
        "usr_writable": os.access("/usr/bin", os.W_OK),
    }
"""
    container = await start_action("python:3", code, on=make_factory(sandbox="bwrap"))

    result = await container.run(run_body({}), 5.0, MB)

    seen = result.result
    assert container.sandboxed
    assert (seen["work"], seen["home"], seen["shadow"]) == (False, False, False)
    assert seen["root"] in ([], [".pyenv"])
    assert seen["pids"] == [1, 2]
    assert seen["uid"] != 0
    assert not seen["init_environ_readable"]
    assert seen["tmp_writable"] and not seen["usr_writable"]


async def test_invoker_environment_does_not_leak_into_actions(
    monkeypatch: pytest.MonkeyPatch, factory: ProcessContainerFactory
) -> None:
    monkeypatch.setenv("WISP_TEST_SECRET", "s3cret")
    container = await factory.create_container(
        ContainerSpec(
            name="env",
            kind="nodejs:20",
            memory_mb=128,
            env={"__OW_API_HOST": "http://127.0.0.1:3233"},
        )
    )
    await container.initialize(
        {"code": "function main() { return {env: process.env}; }", "main": "main"}, 5.0
    )

    result = await container.run(run_body({}), 5.0, MB)

    env = result.result["env"]
    assert "WISP_TEST_SECRET" not in env
    assert env["__OW_API_HOST"] == "http://127.0.0.1:3233"


async def test_logs_without_sentinels_come_back_after_the_wait_with_a_notice(
    start_action: StartAction,
) -> None:
    container = await start_action(
        "python:3", "print('init only')\ndef main(p):\n    return {}\n"
    )
    started = time.monotonic()

    lines = await container.logs(MB, wait_for_sentinel=True)
    waited = time.monotonic() - started

    assert lines[0].endswith("stdout: init only")
    assert lines[-1].endswith(
        "stderr: There was an issue while collecting your logs. Data might be missing."
    )
    assert 0.4 <= waited < 1.5


SANDBOXES = ["none", pytest.param("bwrap", marks=needs_bwrap)]
SPEC = ContainerSpec(name="guest/hello", kind="python:3", memory_mb=128)
TMPDIR_CODE = "import os\ndef main(p):\n    return {'tmp': os.environ['TMPDIR']}\n"


@pytest.mark.parametrize("sandbox", SANDBOXES)
async def test_relative_work_dir_is_made_absolute(
    sandbox: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    start_action: StartAction,
) -> None:
    monkeypatch.chdir(tmp_path)
    factory = ProcessContainerFactory(
        runtime_config(sandbox=sandbox), work_dir=pathlib.Path("rel/containers")
    )
    try:
        container = await start_action("python:3", TMPDIR_CODE, on=factory)

        result = await container.run(run_body({}), 5.0, MB)
    finally:
        await factory.cleanup()

    assert result.outcome is RunOutcome.OK
    assert container.work_dir.is_absolute()
    assert container.work_dir.is_relative_to(tmp_path / "rel" / "containers")
    assert result.result["tmp"] == (
        "/tmp" if sandbox == "bwrap" else str(container.work_dir)
    )


@pytest.mark.parametrize("sandbox", SANDBOXES)
async def test_killed_runtime_process_is_reported_as_exited_not_out_of_memory(
    sandbox: str, make_factory: MakeFactory, start_action: StartAction
) -> None:
    code = "import time\ndef main(p):\n    time.sleep(5)\n    return {}\n"
    container = await start_action("python:3", code, on=make_factory(sandbox=sandbox))
    running = asyncio.create_task(container.run(run_body({}), 5.0, MB))
    await asyncio.sleep(0.1)

    # The process this test's factory started: bwrap itself when sandboxed.
    os.kill(container.pid, signal.SIGKILL)
    result = await running

    assert result.outcome is RunOutcome.DEVELOPER_ERROR
    assert result.result == {"error": EXITED_MESSAGE}


async def test_two_factories_share_a_work_dir_without_touching_each_other(
    tmp_path: pathlib.Path,
) -> None:
    first = ProcessContainerFactory(runtime_config(), work_dir=tmp_path)
    second = ProcessContainerFactory(runtime_config(), work_dir=tmp_path)
    try:
        mine = await first.create_container(SPEC)
        theirs = await second.create_container(SPEC)

        await first.cleanup()
        await theirs.initialize({"code": TMPDIR_CODE, "main": "main"}, 5.0)
        still_runs = await theirs.run(run_body({}), 5.0, MB)
    finally:
        await second.cleanup()

    assert mine.container_id == theirs.container_id == "wsk0_1_guest_hello"
    assert mine.work_dir != theirs.work_dir
    assert not path_exists(mine.work_dir) and not path_exists(first.own_dir)
    assert still_runs.outcome is RunOutcome.OK
    assert not path_exists(second.own_dir)


async def test_first_container_sweeps_directories_of_dead_factories(
    tmp_path: pathlib.Path,
) -> None:
    stale = factory_dir(tmp_path, "wsk0-0badf00d", exited_process())
    alive = factory_dir(tmp_path, "wsk0-0000a11e", Owner.current())
    factory = ProcessContainerFactory(runtime_config(), work_dir=tmp_path)
    try:
        await factory.create_container(SPEC)
        swept_again = await factory.sweep_stale()
    finally:
        await factory.cleanup()

    assert not path_exists(stale)
    assert path_exists(alive / "wsk0_7_guest_old")
    assert swept_again == []


async def test_cleanup_leaves_the_work_dir_as_it_found_it(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "unrelated.txt").write_text("keep me")
    factory = ProcessContainerFactory(runtime_config(), work_dir=tmp_path)
    await factory.create_container(SPEC)

    await factory.cleanup()

    assert names_in(tmp_path) == ["unrelated.txt"]


async def test_long_output_keeps_the_first_lines_and_the_next_activation_is_clean(
    monkeypatch: pytest.MonkeyPatch, start_action: StartAction
) -> None:
    monkeypatch.setattr(log_buffer, "LOG_BUFFER_LIMIT_BYTES", 256 * 1024)
    code = """
def main(p):
    if p.get("long"):
        for index in range(20000):
            print(f"line {index} " + "x" * 90)
    else:
        print("second")
    return {}
"""
    container = await start_action("python:3", code)

    await container.run(run_body({"long": True}), 10.0, MB)
    held = container._logs.size_bytes
    first = await container.logs(100_000, wait_for_sentinel=True)
    await container.run(run_body({}), 5.0, MB)
    second = await container.logs(100_000, wait_for_sentinel=True)

    assert first[0].endswith("stdout: line 0 " + "x" * 90)
    assert first[-2].split(": ", 1)[1].startswith(f"line {len(first) - 2} ")
    assert first[-1].endswith(
        "stderr: Logs were truncated because the total bytes size exceeds the "
        "limit of 100000 bytes."
    )
    assert held <= 2 * 256 * 1024
    assert [line.split(": ", 1)[1] for line in second] == ["second"]
