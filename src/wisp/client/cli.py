"""`wisp action ...` and `wisp activation ...`: a thin command line over the REST API.

The lead's `wisp` entry point adds these commands with `add_client_commands` and runs
them with `run_client_command`. Plain urllib: no event loop, nothing but the API.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_APIHOST = "http://127.0.0.1:3233"
#: OpenWhisk standalone's well-known guest key (the server creates it on first start)
GUEST_AUTH = (
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:"
    "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
)
#: a blocking invoke may take the server's whole wait (60 s by default) and more
REQUEST_TIMEOUT_S = 90.0

KIND_BY_EXTENSION = {".py": "python:3", ".js": "nodejs:20", ".mjs": "nodejs:20"}


@dataclass(frozen=True, slots=True)
class ClientDefaults:
    apihost: str = DEFAULT_APIHOST
    auth: str = GUEST_AUTH


class ClientError(Exception):
    """A request failed; the message is what the user sees."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


class ApiClient:
    def __init__(self, apihost: str, auth: str, timeout_s: float = REQUEST_TIMEOUT_S):
        if "://" not in apihost:
            apihost = f"http://{apihost}"
        self.apihost = apihost.rstrip("/")
        token = base64.b64encode(auth.encode()).decode()
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._timeout_s = timeout_s

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Answer:
        url = f"{self.apihost}/api/v1/namespaces/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(
                {k: _query_text(v) for k, v in query.items()}
            )
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url, data=data, method=method, headers=self._headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return Answer(response.status, _json(response.read()))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, _json(exc.read()))
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach {self.apihost}: {reason}") from exc


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


# --- argument parsing ----------------------------------------------------------------


def _param_value(text: str) -> Any:
    """A `-p KEY VALUE` value: JSON when it parses, else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _params(pairs: Sequence[Sequence[str]] | None) -> dict[str, Any]:
    return {key: _param_value(value) for key, value in (pairs or [])}


def _entity(name: str) -> tuple[str, str]:
    """`NAME` → ("_", NAME); `/ns/NAME` → ("ns", NAME)."""
    if name.startswith("/"):
        namespace, _, rest = name[1:].partition("/")
        if namespace and rest:
            return namespace, rest
    return "_", name


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def add_client_commands(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    defaults: ClientDefaults | None = None,
) -> None:
    """Add `action` and `activation` (with their verbs) to a `wisp` parser."""
    defaults = defaults or ClientDefaults()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--apihost", default=defaults.apihost, help="API host URL")
    common.add_argument(
        "--auth", default=defaults.auth, help="UUID:KEY of the namespace"
    )

    action = subparsers.add_parser("action", help="work with actions")
    verbs = action.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, help_text in (
        ("create", "create an action"),
        ("update", "update an action"),
    ):
        sub = verbs.add_parser(verb, parents=[common], help=help_text)
        sub.add_argument("name")
        sub.add_argument("file", nargs="?" if verb == "update" else None)
        sub.add_argument(
            "--kind", help="runtime kind (default: from the file extension)"
        )
        sub.add_argument("--main", help="entry function name")
        sub.add_argument(
            "-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE")
        )
        sub.add_argument("--memory", type=int, metavar="MB", help="memory limit")
        sub.add_argument("--timeout", type=int, metavar="MS", help="time limit")
        sub.set_defaults(client_handler=_put_action, overwrite=verb == "update")
    sub = verbs.add_parser("get", parents=[common], help="show an action")
    sub.add_argument("name")
    sub.set_defaults(client_handler=_get_action)
    sub = verbs.add_parser("list", parents=[common], help="list actions")
    sub.add_argument("--skip", type=int, default=0)
    sub.add_argument("--limit", type=int, default=30)
    sub.set_defaults(client_handler=_list_actions)
    sub = verbs.add_parser("delete", parents=[common], help="delete an action")
    sub.add_argument("name")
    sub.set_defaults(client_handler=_delete_action)
    sub = verbs.add_parser("invoke", parents=[common], help="invoke an action")
    sub.add_argument("name")
    sub.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE")
    )
    sub.add_argument(
        "-b", "--blocking", action="store_true", help="wait for the result"
    )
    sub.add_argument(
        "-r", "--result", action="store_true", help="print only the result"
    )
    sub.set_defaults(client_handler=_invoke_action)

    activation = subparsers.add_parser("activation", help="work with activations")
    verbs = activation.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, handler, help_text in (
        ("get", _get_activation, "show an activation record"),
        ("result", _activation_result, "show an activation's result"),
        ("logs", _activation_logs, "show an activation's logs"),
    ):
        sub = verbs.add_parser(verb, parents=[common], help=help_text)
        sub.add_argument("activation_id")
        sub.set_defaults(client_handler=handler)
    sub = verbs.add_parser(
        "list", parents=[common], help="list activations, newest first"
    )
    sub.add_argument("name", nargs="?", help="only activations of this action")
    sub.add_argument("--skip", type=int, default=0)
    sub.add_argument("--limit", type=int, default=30)
    sub.set_defaults(client_handler=_list_activations)


def run_client_command(args: argparse.Namespace) -> int:
    """Run a command parsed by `add_client_commands`; returns the exit code."""
    handler: Callable[[argparse.Namespace, ApiClient], Answer] = args.client_handler
    client = ApiClient(args.apihost, args.auth)
    try:
        answer = handler(args, client)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return _report(answer)


def _report(answer: Answer) -> int:
    body = answer.body
    if isinstance(body, dict) and set(body) == {"error", "code"}:
        print(f"error: {body['error']} (code: {body['code']})", file=sys.stderr)
        return 1
    if answer.status >= 400 and not isinstance(body, (dict, list)):
        print(f"error: HTTP {answer.status}: {body}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    # a finished activation that failed (502/500) is printed and fails the command
    return 0 if answer.status < 400 else 1


# --- handlers ----------------------------------------------------------------------------


def _put_action(args: argparse.Namespace, client: ApiClient) -> Answer:
    namespace, name = _entity(args.name)
    body: dict[str, Any] = {}
    if args.file:
        path = Path(args.file)
        kind = args.kind or KIND_BY_EXTENSION.get(path.suffix.lower())
        if kind is None:
            raise ClientError(f"cannot tell the kind of {path.name}; pass --kind")
        try:
            code = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ClientError(
                f"cannot read {path}: it is not UTF-8 text (byte {exc.start})"
            ) from exc
        body["exec"] = {"kind": kind, "code": code}
        if args.main:
            body["exec"]["main"] = args.main
    elif args.kind or args.main:
        raise ClientError("--kind and --main need a FILE with the code")
    if args.param:
        body["parameters"] = [
            {"key": k, "value": v} for k, v in _params(args.param).items()
        ]
    limits = {}
    if args.memory is not None:
        limits["memory"] = args.memory
    if args.timeout is not None:
        limits["timeout"] = args.timeout
    if limits:
        body["limits"] = limits
    query = {"overwrite": True} if args.overwrite else None
    return client.request(
        "PUT", f"{_quote(namespace)}/actions/{_quote(name)}", query=query, body=body
    )


def _get_action(args: argparse.Namespace, client: ApiClient) -> Answer:
    namespace, name = _entity(args.name)
    return client.request("GET", f"{_quote(namespace)}/actions/{_quote(name)}")


def _list_actions(args: argparse.Namespace, client: ApiClient) -> Answer:
    return client.request(
        "GET", "_/actions", query={"skip": args.skip, "limit": args.limit}
    )


def _delete_action(args: argparse.Namespace, client: ApiClient) -> Answer:
    namespace, name = _entity(args.name)
    return client.request("DELETE", f"{_quote(namespace)}/actions/{_quote(name)}")


def _invoke_action(args: argparse.Namespace, client: ApiClient) -> Answer:
    namespace, name = _entity(args.name)
    blocking = args.blocking or args.result
    query = {"blocking": blocking, "result": args.result}
    return client.request(
        "POST",
        f"{_quote(namespace)}/actions/{_quote(name)}",
        query=query,
        body=_params(args.param),
    )


def _get_activation(args: argparse.Namespace, client: ApiClient) -> Answer:
    return client.request("GET", f"_/activations/{_quote(args.activation_id)}")


def _activation_result(args: argparse.Namespace, client: ApiClient) -> Answer:
    return client.request("GET", f"_/activations/{_quote(args.activation_id)}/result")


def _activation_logs(args: argparse.Namespace, client: ApiClient) -> Answer:
    return client.request("GET", f"_/activations/{_quote(args.activation_id)}/logs")


def _list_activations(args: argparse.Namespace, client: ApiClient) -> Answer:
    query: dict[str, Any] = {"skip": args.skip, "limit": args.limit}
    if args.name:
        query["name"] = args.name
    return client.request("GET", "_/activations", query=query)
