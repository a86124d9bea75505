"""The `wisp` command: run standalone Wisp, or talk to a running one."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from wisp.client.cli import add_client_commands, run_client_command
from wisp.config.load import load_config
from wisp.core.errors import WispError
from wisp.observability.logging import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wisp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    standalone = commands.add_parser(
        "standalone", help="run controller, scheduler and invoker in one process"
    )
    standalone.add_argument("--port", type=int, help="REST API port (default 3233)")
    standalone.add_argument("--data-dir", help="where actions and activations are kept")
    standalone.add_argument("--config", help="a TOML file over the packaged defaults")
    standalone.add_argument(
        "--etcd",
        metavar="HOST:PORT",
        help="use this etcd instead of the embedded store",
    )

    add_client_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    except OSError as exc:
        print(f"wisp: {exc}", file=sys.stderr)
        return 1
    return 0


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
