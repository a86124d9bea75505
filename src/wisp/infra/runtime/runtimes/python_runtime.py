"""Action proxy for `python:3` actions: OpenWhisk's `/init` + `/run` protocol over HTTP.

Runs inside the sandbox on the standard library only. The invoker starts it as
`python_runtime.py --port-fd N` and reads the listening port from that descriptor.
"""

from __future__ import annotations

import json
import os
import socketserver
import sys
import threading
import traceback
import types
from collections.abc import Callable
from typing import Any

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"

#: Thread stacks count against the address-space limit; 2 MiB leaves room for deep
#: recursion in C code while letting dozens of concurrent activations fit.
THREAD_STACK_BYTES = 2 * 1024 * 1024
#: request line and header lines longer than this are refused
MAX_HEADER_LINE = 64 * 1024

NOT_A_DICTIONARY = "The action did not return a dictionary."
NOT_JSON = "The action returned a value that is not valid JSON: {reason}"
TOO_DEEP = "The action returned a value that is nested too deeply to encode as JSON."
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           411: "Length Required", 502: "Bad Gateway"}  # fmt: skip

# The original streams: user code may rebind sys.stdout, sentinels must still go out.
_STDOUT = sys.__stdout__
_STDERR = sys.__stderr__
_OUTPUT_LOCK = threading.Lock()


class InitError(Exception):
    """The action code could not be loaded; the message goes back to the invoker."""


def write_sentinels() -> None:
    """Close the current activation's log output on both streams."""
    with _OUTPUT_LOCK:
        for stream in (_STDOUT, _STDERR):
            if stream is not None:
                stream.write(SENTINEL + "\n")
                stream.flush()


def env_text(value: Any) -> str:
    """Environment values as OpenWhisk passes them: null is empty, the rest JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _execute_module(source: str, filename: str) -> types.ModuleType:
    try:
        compiled = compile(source, filename, "exec")
    except (SyntaxError, ValueError) as exc:
        raise InitError(f"The action failed to compile: {describe(exc)}") from exc

    # The action runs as the program's __main__, as it would on the command line.
    module = types.ModuleType("__main__")
    module.__file__ = filename
    sys.modules["__main__"] = module
    try:
        exec(compiled, module.__dict__)
    except BaseException as exc:
        traceback.print_exc()
        raise InitError(
            f"The action failed during initialization: {describe(exc)}"
        ) from exc
    return module


def _load_zip(code: str) -> types.ModuleType:
    # Imported here: zipped actions are rare and these imports cost start-up time.
    import base64
    import binascii
    import io
    import tempfile
    import zipfile

    try:
        archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(code, validate=True)))
    except (binascii.Error, ValueError, zipfile.BadZipFile) as exc:
        raise InitError(
            f"The action's binary code is not a base64-encoded zip file: {exc}"
        ) from exc
    if "__main__.py" not in archive.namelist():
        raise InitError("The action's zip file does not contain __main__.py.")

    target = tempfile.mkdtemp(prefix="action-")
    archive.extractall(target)
    sys.path.insert(0, target)
    main_path = os.path.join(target, "__main__.py")
    with open(main_path, encoding="utf-8") as handle:
        return _execute_module(handle.read(), main_path)


class Action:
    """The loaded action: its entry point, loaded at most once."""

    def __init__(self) -> None:
        self.entry: Callable[[Any], Any] | None = None

    def initialize(self, value: dict[str, Any]) -> None:
        """Export env, load the code and find the entry point; raises InitError."""
        code = value.get("code")
        if not isinstance(code, str) or not code:
            raise InitError("The action has no code to initialize.")
        entry_name = value.get("main") or "main"

        # Env first: the code may read it while it loads.
        env = value.get("env") or {}
        if isinstance(env, dict):
            os.environ.update({str(k): env_text(v) for k, v in env.items()})

        if value.get("binary"):
            module = _load_zip(code)
        else:
            module = _execute_module(code, "__main__.py")
        entry = getattr(module, str(entry_name), None)
        if not callable(entry):
            raise InitError(
                f"The action code does not define a function named '{entry_name}'."
            )
        self.entry = entry


ACTION = Action()
_INIT_LOCK = threading.Lock()

Reply = tuple[int, bytes]


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False).encode("utf-8")


def handle_init(body: dict[str, Any]) -> Reply:
    value = body.get("value")
    with _INIT_LOCK:
        if ACTION.entry is not None:
            return 403, _encode(
                {"error": "Cannot initialize the action more than once."}
            )
        try:
            ACTION.initialize(value if isinstance(value, dict) else {})
        except InitError as exc:
            # Without a /run to follow, the failure's output is its own activation.
            write_sentinels()
            return 502, _encode({"error": str(exc)})
    # On success the init output belongs to the first activation: no sentinels.
    return 200, _encode({"ok": True})


def encode_result(result: Any) -> Reply:
    """The reply for what the action returned: a JSON object or array, else why not."""
    if not isinstance(result, (dict, list)):
        return 502, _encode({"error": NOT_A_DICTIONARY})
    try:
        return 200, _encode(result)
    except RecursionError:
        return 502, _encode({"error": TOO_DEEP})
    except (TypeError, ValueError) as exc:
        # NaN or Infinity, a value json cannot encode, a circular reference
        return 502, _encode({"error": NOT_JSON.format(reason=describe(exc))})


def handle_run(body: dict[str, Any]) -> Reply:
    entry = ACTION.entry
    if entry is None:
        write_sentinels()
        return 403, _encode({"error": "Cannot invoke an uninitialized action."})

    for key, field in body.items():
        if key != "value":
            os.environ["__OW_" + key.upper()] = env_text(field)

    reply: Reply
    try:
        result = entry(body.get("value", {}))
    except BaseException as exc:
        traceback.print_exc()
        reply = 502, _encode({"error": f"An error has occurred: {describe(exc)}"})
    else:
        reply = encode_result(result)

    # User code may have swapped the streams: flush what it wrote, then close the logs.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    write_sentinels()
    return reply


def route(method: str, path: str, raw: bytes) -> Reply:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        return 400, _encode({"error": f"The request is not valid JSON: {exc}"})
    if not isinstance(body, dict):
        return 400, _encode({"error": "The request must be a JSON object."})
    if method == "POST" and path == "/init":
        return handle_init(body)
    if method == "POST" and path == "/run":
        return handle_run(body)
    return 404, _encode({"error": f"Unknown path {path}."})


class ActionHandler(socketserver.StreamRequestHandler):
    """Just enough HTTP/1.1 for the invoker: one request with Content-Length per
    connection. (http.server would pull in ssl and email: tens of ms at start.)"""

    def handle(self) -> None:
        request_line = self.rfile.readline(MAX_HEADER_LINE)
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            return
        method, path, _ = parts

        length: int | None = None
        chunked = False
        while True:
            line = self.rfile.readline(MAX_HEADER_LINE)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length" and value.strip().isdigit():
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True

        if chunked:
            status, payload = 411, _encode({"error": "Send a Content-Length."})
        else:
            status, payload = route(method, path, self.rfile.read(length or 0))
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + payload)


class ActionServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv: list[str]) -> int:
    if "--port-fd" not in argv:
        print("usage: python_runtime.py --port-fd N", file=sys.stderr)
        return 2
    port_fd = int(argv[argv.index("--port-fd") + 1])

    threading.stack_size(THREAD_STACK_BYTES)
    server = ActionServer(("127.0.0.1", 0), ActionHandler)

    # The port goes over the inherited descriptor, never stdout (that is user output).
    os.write(port_fd, f"{server.server_address[1]}\n".encode())
    os.close(port_fd)
    server.serve_forever(poll_interval=3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
