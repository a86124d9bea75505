"""The thin command-line client over Wisp's REST API (`wisp action`, `wisp activation`)."""

from wisp.client.cli import (
    ApiClient,
    ClientDefaults,
    add_client_commands,
    run_client_command,
)

__all__ = ["ApiClient", "ClientDefaults", "add_client_commands", "run_client_command"]
