"""The `wisp` command's own arguments: clear refusals before anything starts."""

from __future__ import annotations

import pytest

from wisp.cli import build_parser


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "99999"], "port 99999 is outside 0..65535"),
        (["--port", "web"], "not a port number: 'web'"),
        (["--etcd", "http://127.0.0.1:2379"], "not HOST:PORT"),
        (["--etcd", ""], "not HOST:PORT: ''"),
        (["--etcd", "127.0.0.1:2379,127.0.0.1"], "not HOST:PORT: '127.0.0.1'"),
        (["--etcd", "127.0.0.1:70000"], "port 70000 is outside"),
    ],
)
def test_standalone_refuses_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["standalone", *argv])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_standalone_accepts_several_etcd_hosts() -> None:
    args = build_parser().parse_args(
        ["standalone", "--etcd", "127.0.0.1:2379, localhost:2380", "--port", "0"]
    )

    assert args.etcd == "127.0.0.1:2379,localhost:2380"
    assert args.port == 0
