"""Fixtures for the process container backend: a factory over a temporary work dir."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from wisp.config.load import load_config
from wisp.config.model import RuntimeConfig
from wisp.infra.runtime.container import ContainerSpec
from wisp.infra.runtime.process import ProcessContainer, ProcessContainerFactory

MakeFactory = Callable[..., ProcessContainerFactory]
StartAction = Callable[..., Awaitable[ProcessContainer]]

# Test modules annotate with these shapes themselves: nothing is imported from here.


def runtime_config(**overrides: Any) -> RuntimeConfig:
    dotted = {f"invoker.runtime.{key}": value for key, value in overrides.items()}
    return load_config(environ={}, overrides=dotted).invoker.runtime


@pytest.fixture
async def make_factory(tmp_path: pathlib.Path) -> AsyncIterator[MakeFactory]:
    """Factories with config overrides; every container is destroyed afterwards."""
    made: list[ProcessContainerFactory] = []

    def make(**overrides: Any) -> ProcessContainerFactory:
        factory = ProcessContainerFactory(
            runtime_config(**overrides),
            work_dir=tmp_path / f"containers{len(made)}",
            sentinel_wait_s=0.5,
        )
        made.append(factory)
        return factory

    yield make
    for factory in made:
        await factory.cleanup()


@pytest.fixture
def factory(make_factory: MakeFactory) -> ProcessContainerFactory:
    return make_factory()


@pytest.fixture
def start_action(factory: ProcessContainerFactory) -> StartAction:
    """Start a container of `kind` and initialize it with `code`."""

    async def start(
        kind: str,
        code: str,
        *,
        main: str = "main",
        memory_mb: int = 256,
        env: dict[str, str] | None = None,
        binary: bool = False,
        on: ProcessContainerFactory | None = None,
    ) -> ProcessContainer:
        container = await (on or factory).create_container(
            ContainerSpec(name="guest/test", kind=kind, memory_mb=memory_mb)
        )
        payload = {"name": "test", "main": main, "code": code, "binary": binary}
        result = await container.initialize({**payload, "env": env or {}}, 5.0)
        assert result.result.get("error") is None, result
        return container

    return start
