"""The configuration loader: defaults, file, environment, and clear errors."""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from wisp.config.load import ConfigError, load_config
from wisp.config.model import WispConfig


def _leaf_keys(cls: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.type) or isinstance(
            field.default_factory, type
        ):
            keys |= _leaf_keys(field.default_factory, f"{prefix}{field.name}.")
        else:
            keys.add(prefix + field.name)
    return keys


def _toml_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, value in tree.items():
        if isinstance(value, dict):
            keys |= _toml_keys(value, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def test_defaults_file_and_dataclasses_have_the_same_keys() -> None:
    text = resources.files("wisp.config").joinpath("defaults.toml").read_text()

    in_file = _toml_keys(tomllib.loads(text))

    assert in_file == _leaf_keys(WispConfig)


def test_packaged_defaults_equal_the_dataclass_defaults() -> None:
    assert load_config(environ={}) == WispConfig()


def test_environment_overrides_nested_keys_with_types() -> None:
    env = {
        "WISP__SCHEDULER__QUEUE__IDLE_GRACE_S": "5",
        "WISP__CONTROLLER__PORT": "4000",
        "WISP__INVOKER__TAGS": "gpu, fast",
        "WISP__SCHEDULER__SCHEDULING__ALLOW_OVER_PROVISION_BEFORE_THROTTLE": "true",
        "OTHER": "ignored",
    }

    config = load_config(environ=env)

    assert config.scheduler.queue.idle_grace_s == 5.0
    assert config.controller.port == 4000
    assert config.invoker.tags == ("gpu", "fast")
    assert config.scheduler.scheduling.allow_over_provision_before_throttle is True


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "wisp.toml"
    path.write_text("[controller]\nport = 1111\nhost = '127.0.0.2'\n")

    config = load_config(
        path,
        environ={"WISP__CONTROLLER__PORT": "2222"},
        overrides={"store.data_dir": "/tmp/x"},
    )

    assert config.controller.host == "127.0.0.2"
    assert config.controller.port == 2222
    assert config.store.data_dir == "/tmp/x"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WISP__CONTROLLER__PORTT": "1"},
            "unknown configuration key(s): controller.portt",
        ),
        ({"WISP__CONTROLLER__PORT": "many"}, "controller.port must be int"),
        ({"WISP__INVOKER__HEALTH_PROBE": "maybe"}, "invoker.health_probe must be bool"),
        ({"WISP__CONTROLLER": "x"}, "controller must be a section"),
        ({"WISP__INVOKER__USER_MEMORY_MB": "-5"}, "invoker.user_memory_mb must not"),
        ({"WISP__INVOKER__USER_MEMORY_MB": "0"}, "user_memory_mb must be positive"),
        ({"WISP__CONTROLLER__PORT": "99999"}, "controller.port must be a port"),
        ({"WISP__MESSAGING__BACKEND": "nats"}, "messaging.backend 'nats' is not"),
        ({"WISP__STORE__BACKEND": "mongo"}, "store.backend 'mongo': use"),
        ({"WISP__SCHEDULER__QUEUE__IDLE_GRACE_S": "-1"}, "idle_grace_s must not be"),
    ],
)
def test_bad_configuration_is_named_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=env)

    assert message in str(caught.value)
