"""The `wisp` command: run standalone Wisp, or talk to a running one."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from wisp.client.cli import ClientDefaults, add_client_commands, run_client_command
from wisp.config.load import load_config
from wisp.core.errors import WispError
from wisp.observability.logging import setup_logging


def build_parser(client: ClientDefaults | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wisp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    standalone = commands.add_parser(
        "standalone",
        help="run controller, scheduler and invoker in one process",
        description=(
            "Run Wisp in one process: the REST API v1 on 127.0.0.1, one scheduler and "
            "one invoker on embedded infrastructure. Settings come from the packaged "
            "defaults, then --config, then WISP__SECTION__KEY environment variables, "
            "then these flags. Stop it with Ctrl-C or SIGTERM."
        ),
    )
    standalone.add_argument(
        "--port", type=_port, help="REST API port on 127.0.0.1 (default 3233)"
    )
    standalone.add_argument(
        "--data-dir", help="where actions and activations are kept (default .wisp)"
    )
    standalone.add_argument("--config", help="a TOML file over the packaged defaults")
    standalone.add_argument(
        "--etcd",
        metavar="HOST:PORT",
        type=_etcd_hosts,
        help="use this etcd (HOST:PORT[,HOST:PORT...]) instead of the embedded store",
    )

    add_client_commands(commands, client)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        client = load_config().client
    except WispError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 2
    defaults = ClientDefaults(apihost=client.apihost, auth=client.auth)
    args = build_parser(defaults).parse_args(argv)
    if args.command != "standalone":
        return run_client_command(args)

    overrides: dict[str, Any] = {}
    if args.port is not None:
        overrides["controller.port"] = args.port
    if args.data_dir:
        overrides["store.data_dir"] = args.data_dir
    if args.etcd:
        overrides["etcd.hosts"] = args.etcd
    try:
        config = load_config(args.config, overrides=overrides)
    except (WispError, OSError, ValueError) as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level, config.logging.format)

    from wisp.standalone.server import serve

    try:
        _run(serve(config))
    except KeyboardInterrupt:
        pass
    except (OSError, WispError) as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 1
    return 0


def _etcd_hosts(text: str) -> str:
    hosts = [h.strip() for h in text.split(",")]
    for host in hosts:
        name, sep, port = host.rpartition(":")
        if "://" in host or not sep or not name:
            raise argparse.ArgumentTypeError(f"not HOST:PORT: {host!r}")
        _port(port)
    return ",".join(hosts)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0..65535")
    return port


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed (it is a dependency), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
