"""Factory directories: marked with their owner process, swept only when it is gone."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess

import pytest

from wisp.infra.runtime import work_dirs
from wisp.infra.runtime.work_dirs import OWNER_FILE, Owner


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped."""
    child = subprocess.Popen(["/usr/bin/true"])
    child.wait()
    return child.pid


def factory_dir(root: pathlib.Path, name: str, owner: Owner | None) -> pathlib.Path:
    """A factory directory holding one container directory with a file."""
    directory = root / name
    (directory / "wsk0_1_guest_x").mkdir(parents=True)
    (directory / "wsk0_1_guest_x" / "scratch.txt").write_text("left behind")
    if owner is not None:
        (directory / OWNER_FILE).write_text(owner.to_json())
    return directory


def test_claimed_directory_names_this_process(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "wsk0-aaaa"

    work_dirs.claim(directory)

    owner = work_dirs.read_owner(directory)
    assert owner == Owner.current()
    assert owner is not None and owner.pid == os.getpid()
    assert not owner.is_gone(Owner.current())


def test_owner_of_an_exited_process_is_gone() -> None:
    owner = dataclasses.replace(Owner.current(), pid=dead_pid())

    assert owner.is_gone(Owner.current())


def test_owner_whose_pid_was_reused_by_another_process_is_gone() -> None:
    here = Owner.current()
    assert here.start_ticks is not None
    owner = dataclasses.replace(here, start_ticks=here.start_ticks - 1)

    assert owner.is_gone(here)


def test_owner_from_an_earlier_boot_is_gone() -> None:
    owner = dataclasses.replace(Owner.current(), boot_id="an-earlier-boot")

    assert owner.is_gone(Owner.current())


def test_owner_in_another_pid_namespace_is_never_taken_for_gone() -> None:
    owner = dataclasses.replace(
        Owner.current(), pid=dead_pid(), pid_namespace="pid:[1]"
    )

    assert not owner.is_gone(Owner.current())


def test_sweep_removes_only_directories_of_dead_owners(tmp_path: pathlib.Path) -> None:
    here = Owner.current()
    stale = factory_dir(
        tmp_path, "wsk0-dead", dataclasses.replace(here, pid=dead_pid())
    )
    live = factory_dir(tmp_path, "wsk0-live", here)
    unmarked = factory_dir(tmp_path, "wsk0_3_legacy", None)
    (tmp_path / "wsk0-file").write_text("not a directory")

    removed = work_dirs.sweep(tmp_path)

    assert removed == [stale]
    assert not stale.exists()
    assert (live / "wsk0_1_guest_x" / "scratch.txt").exists()
    assert (unmarked / "wsk0_1_guest_x" / "scratch.txt").exists()
    assert (tmp_path / "wsk0-file").exists()


@pytest.mark.parametrize("text", ["", "{not json", '{"no_pid": 1}', '["list"]'])
def test_unreadable_owner_file_is_never_swept(
    tmp_path: pathlib.Path, text: str
) -> None:
    directory = factory_dir(tmp_path, "wsk0-odd", None)
    (directory / OWNER_FILE).write_text(text)

    removed = work_dirs.sweep(tmp_path)

    assert removed == []
    assert directory.exists()


def test_sweep_of_a_missing_work_dir_removes_nothing(tmp_path: pathlib.Path) -> None:
    assert work_dirs.sweep(tmp_path / "missing") == []
