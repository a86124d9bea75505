"""The REST API on a real HTTP server (127.0.0.1) with MemoryEtcd, MemoryBroker,
MemoryStore and a fake scheduler that answers on `completed0`."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wisp.config.model import WispConfig
from wisp.controller.auth import GUEST_IDENTITY
from wisp.controller.journal import LOST_TEXT
from wisp.controller.service import Controller
from wisp.infra.etcd.memory import MemoryEtcd
from wisp.infra.messaging.memory import MemoryBroker
from wisp.infra.store.memory import MemoryStore
from wisp.infra.store.sqlite import SqliteStore

from .conftest import KEYS, FakeScheduler, controller_config

pytestmark = pytest.mark.timeout(20)


def basic(uuid: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{uuid}:{key}".encode()).decode()


GUEST_AUTH = basic(GUEST_IDENTITY.uuid, GUEST_IDENTITY.key)
ACTIONS = "/api/v1/namespaces/_/actions"
ACTIVATIONS = "/api/v1/namespaces/_/activations"
HELLO = {
    "exec": {"kind": "python:3", "code": "def main(args):\n    return args\n"},
    "parameters": [{"key": "greeting", "value": "hello"}],
    "limits": {"timeout": 3000, "memory": 128},
}

Api = Callable[..., Awaitable[tuple[int, Any, dict[str, str]]]]


@pytest.fixture
async def scheduler(
    etcd: MemoryEtcd, broker: MemoryBroker, store: MemoryStore
) -> AsyncIterator[FakeScheduler]:
    fake = FakeScheduler(etcd, broker, store)
    await fake.start()
    yield fake
    await fake.stop()


async def _start_controller(
    etcd: MemoryEtcd, broker: MemoryBroker, store: MemoryStore, config: WispConfig
) -> Controller:
    controller = Controller(
        config, etcd=etcd, messaging=broker, entity_store=store, activation_store=store
    )
    await controller.start()
    return controller


@pytest.fixture
async def api_factory(
    etcd: MemoryEtcd, broker: MemoryBroker, store: MemoryStore
) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    """Starts a controller (config overrides as keyword arguments) and returns a
    request helper `api(method, path, *, json=..., data=..., auth=...)`."""
    controllers: list[Controller] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(**overrides: Any) -> Api:
        controller = await _start_controller(
            etcd, broker, store, controller_config(**overrides)
        )
        controllers.append(controller)
        session = aiohttp.ClientSession(f"http://127.0.0.1:{controller.port}")
        sessions.append(session)

        async def api(
            method: str,
            path: str,
            *,
            auth: Any = GUEST_AUTH,
            headers: dict[str, str] | None = None,
            **kwargs: Any,
        ) -> tuple[int, Any, dict[str, str]]:
            sent = {"Authorization": auth} if auth else {}
            sent.update(headers or {})
            async with session.request(
                method, path, headers=sent, **kwargs
            ) as response:
                text = await response.text()
                body = strict_json(text) if text else None
                return response.status, body, dict(response.headers)

        return api

    yield make
    for session in sessions:
        await session.close()
    for controller in controllers:
        await controller.stop()


@pytest.fixture
async def api(
    api_factory: Callable[..., Awaitable[Api]], scheduler: FakeScheduler
) -> Api:
    return await api_factory()


async def create_hello(api: Api, name: str = "hello") -> dict[str, Any]:
    status, body, _ = await api("PUT", f"{ACTIONS}/{name}", json=HELLO)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def stored_activation(api: Api, activation_id: str) -> dict[str, Any]:
    """The record, once the fake scheduler has stored it (bounded wait)."""
    for _ in range(100):
        status, body, _ = await api("GET", f"{ACTIVATIONS}/{activation_id}")
        if status == 200:
            assert isinstance(body, dict)
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"activation {activation_id} was never stored")


def _not_json(name: str) -> Any:
    raise AssertionError(f"the response has {name}, which is not JSON")


def strict_json(text: str) -> Any:
    """Parse an answer as standard JSON: NaN and Infinity fail the test."""
    return json.loads(text, parse_constant=_not_json)


def assert_error(body: Any, text: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error", "code"}
    assert body["error"] == text
    assert body["code"]


# --- server info, auth --------------------------------------------------------------------


async def test_info_endpoints_answer_without_auth(api: Api) -> None:
    root_status, root, _ = await api("GET", "/", auth=None)
    v1_status, v1, _ = await api("GET", "/api/v1", auth=None)

    assert root_status == 200 and "python:3" in root["kinds"]
    assert v1_status == 200 and v1["api_paths"] == ["/api/v1"]


async def test_namespaces_lists_the_callers_namespace(api: Api) -> None:
    status, body, _ = await api("GET", "/api/v1/namespaces")

    assert (status, body) == (200, ["guest"])


@pytest.mark.parametrize(
    "auth",
    [
        None,
        basic(GUEST_IDENTITY.uuid, "wrong"),
        basic("x", "y"),
        "Bearer token",
    ],
)
async def test_missing_or_wrong_key_is_unauthorized(api: Api, auth: Any) -> None:
    status, body, _ = await api("GET", ACTIONS, auth=auth)

    assert status == 401
    assert_error(body, "The supplied authentication is invalid")


async def test_another_namespace_is_forbidden(api: Api) -> None:
    status, body, _ = await api("GET", "/api/v1/namespaces/alice/actions")

    assert status == 403
    assert_error(
        body, "The supplied authentication is not authorized to access this resource."
    )


async def test_unknown_route_answers_an_openwhisk_error(api: Api) -> None:
    status, body, _ = await api("GET", "/api/v1/nothing/here")
    method_status, method_body, _ = await api("PATCH", f"{ACTIONS}/hello")

    assert status == 404
    assert_error(body, "The requested resource does not exist.")
    assert method_status == 405
    assert set(method_body) == {"error", "code"}


# --- actions ---------------------------------------------------------------------------------


async def test_created_action_reads_back_with_its_code(api: Api) -> None:
    created = await create_hello(api)

    status, read, _ = await api("GET", f"{ACTIONS}/hello")

    assert status == 200
    assert read == created
    assert read["exec"]["code"] == HELLO["exec"]["code"]  # type: ignore[index]
    assert read["namespace"] == "guest" and read["version"] == "0.0.1"
    assert read["limits"]["memory"] == 128


async def test_create_over_existing_action_conflicts(api: Api) -> None:
    await create_hello(api)

    status, body, _ = await api("PUT", f"{ACTIONS}/hello", json=HELLO)

    assert status == 409
    assert_error(body, "resource already exists")


async def test_update_with_overwrite_bumps_version_and_keeps_the_code(api: Api) -> None:
    first = await create_hello(api)

    status, updated, _ = await api(
        "PUT", f"{ACTIONS}/hello?overwrite=true", json={"limits": {"memory": 256}}
    )

    assert status == 200
    assert updated["version"] == "0.0.2"
    assert updated["rev"] != first["rev"]
    assert updated["exec"]["code"] == HELLO["exec"]["code"]  # type: ignore[index]
    assert updated["limits"]["memory"] == 256 and updated["limits"]["timeout"] == 3000


async def test_list_actions_omits_code(api: Api) -> None:
    await create_hello(api, "one")
    await create_hello(api, "two")

    status, listed, _ = await api("GET", f"{ACTIONS}?limit=10")

    assert status == 200
    assert sorted(a["name"] for a in listed) == ["one", "two"]
    assert all("code" not in a["exec"] for a in listed)


async def test_delete_returns_the_action_then_it_is_gone(api: Api) -> None:
    created = await create_hello(api)

    status, deleted, _ = await api("DELETE", f"{ACTIONS}/hello")
    get_status, get_body, _ = await api("GET", f"{ACTIONS}/hello")
    again_status, _, _ = await api("DELETE", f"{ACTIONS}/hello")

    assert (status, deleted) == (200, created)
    assert get_status == 404
    assert_error(get_body, "The requested resource does not exist.")
    assert again_status == 404


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{broken", "The request content was malformed"),
        (json.dumps({"exec": {"kind": "cobol:1", "code": "x"}}).encode(), "cobol:1"),
        (
            json.dumps(
                {"exec": {"kind": "python:3", "code": "x"}, "limits": {"memory": 5}}
            ).encode(),
            "limits.memory",
        ),
    ],
)
async def test_bad_action_documents_are_bad_requests(
    api: Api, data: bytes, needle: str
) -> None:
    status, body, _ = await api("PUT", f"{ACTIONS}/hello", data=data)

    assert status == 400
    assert needle in body["error"]


async def test_illegal_action_name_is_a_bad_request(api: Api) -> None:
    status, body, _ = await api("PUT", f"{ACTIONS}/-bad", json=HELLO)

    assert status == 400
    assert "-bad" in body["error"]


# --- invoke ------------------------------------------------------------------------------------


async def test_blocking_invoke_answers_the_record_with_merged_parameters(
    api: Api, scheduler: FakeScheduler
) -> None:
    action = await create_hello(api)

    status, record, headers = await api(
        "POST", f"{ACTIONS}/hello?blocking=true", json={"name": "wisp"}
    )

    assert status == 200
    assert record["response"]["success"] is True
    assert record["response"]["result"] == {
        "echo": {"greeting": "hello", "name": "wisp"}
    }
    assert headers["x-openwhisk-activation-id"] == record["activationId"]
    [msg] = scheduler.received
    assert msg.blocking is True
    assert msg.activation_id == record["activationId"]
    assert str(msg.action) == "guest/hello@0.0.1"
    assert msg.revision == action["rev"]
    assert msg.user.namespace == "guest"
    assert msg.root_controller_index.as_string == "0"


async def test_blocking_invoke_with_result_answers_only_the_result(api: Api) -> None:
    await create_hello(api)

    status, result, headers = await api(
        "POST", f"{ACTIONS}/hello?blocking=true&result=true", json={"n": 1}
    )

    assert status == 200
    assert result == {"echo": {"greeting": "hello", "n": 1}}
    assert "x-openwhisk-activation-id" in headers


@pytest.mark.parametrize(("mode", "expected"), [("fail", 502), ("whisk", 500)])
async def test_failed_blocking_invoke_maps_the_status(
    api: Api, mode: str, expected: int
) -> None:
    await create_hello(api)

    status, record, headers = await api(
        "POST", f"{ACTIONS}/hello?blocking=true", json={"mode": mode}
    )

    assert status == expected
    assert record["response"]["success"] is False
    assert headers["x-openwhisk-activation-id"] == record["activationId"]


async def test_non_blocking_invoke_is_accepted_and_the_record_appears(
    api: Api, scheduler: FakeScheduler
) -> None:
    await create_hello(api)

    status, body, headers = await api("POST", f"{ACTIONS}/hello")

    assert status == 202
    activation_id = body["activationId"]
    assert headers["x-openwhisk-activation-id"] == activation_id
    record = await stored_activation(api, activation_id)
    assert record["response"]["result"] == {"echo": {"greeting": "hello"}}
    assert scheduler.received[0].blocking is False


async def test_blocking_invoke_past_its_timeout_is_accepted(api: Api) -> None:
    await create_hello(api)

    status, body, headers = await api(
        "POST", f"{ACTIONS}/hello?blocking=true&timeout=100", json={"mode": "slow"}
    )

    assert status == 202
    assert headers["x-openwhisk-activation-id"] == body["activationId"]


async def test_blocking_invoke_reads_the_store_when_the_ack_has_no_record(
    api: Api, scheduler: FakeScheduler
) -> None:
    await create_hello(api)
    scheduler.shrunk = True

    status, record, _ = await api("POST", f"{ACTIONS}/hello?blocking=true")

    assert status == 200
    assert record["response"]["result"] == {"echo": {"greeting": "hello"}}


async def test_invoke_of_unknown_action_is_not_found(api: Api) -> None:
    status, body, _ = await api("POST", f"{ACTIONS}/missing?blocking=true")

    assert status == 404
    assert_error(body, "The requested resource does not exist.")


@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b"{oops"])
async def test_invoke_with_non_object_body_is_a_bad_request(
    api: Api, data: bytes
) -> None:
    await create_hello(api)

    status, body, _ = await api("POST", f"{ACTIONS}/hello", data=data)

    assert status == 400
    assert "malformed" in body["error"]


async def test_invoke_body_over_the_payload_limit_is_too_large(
    api_factory: Callable[..., Awaitable[Api]], scheduler: FakeScheduler
) -> None:
    api = await api_factory(**{"limits.max_payload_bytes": 64})
    await create_hello(api)
    data = json.dumps({"x": "y" * 100}).encode()

    status, body, _ = await api("POST", f"{ACTIONS}/hello", data=data)

    assert status == 413
    assert_error(
        body,
        f"The request content is too large: {len(data)} bytes exceed the limit of "
        "64 bytes.",
    )


async def test_gzip_body_that_inflates_over_the_limit_is_too_large(
    api_factory: Callable[..., Awaitable[Api]], scheduler: FakeScheduler
) -> None:
    api = await api_factory(**{"limits.max_payload_bytes": 1024})
    await create_hello(api)
    bomb = gzip.compress(json.dumps({"x": "y" * 100_000}).encode())

    status, body, _ = await api(
        "POST", f"{ACTIONS}/hello", data=bomb, headers={"Content-Encoding": "gzip"}
    )

    assert len(bomb) < 1024
    assert status == 413
    assert_error(
        body,
        "The request content is too large: it exceeds the limit of 1024 bytes.",
    )


# --- request JSON -----------------------------------------------------------------------

NOT_JSON_BODIES = [
    pytest.param(b'{"x": NaN}', "NaN is not a JSON value", id="nan"),
    pytest.param(b'{"x": [1, {"y": Infinity}]}', "Infinity", id="infinity"),
    pytest.param(b'{"x": -Infinity}', "-Infinity", id="minus-infinity"),
    pytest.param(b'{"x": 1e400}', "the number 1e400 is out of range", id="overflow"),
    pytest.param(b'{"x": -2.5E+999}', "out of range", id="negative-overflow"),
    pytest.param(b'{"x": ' + b"9" * 5000 + b"}", "digits", id="huge-integer"),
    pytest.param(b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    pytest.param(b'{"x": ' + b"[" * 129 + b"]" * 129 + b"}", "nested too deeply"),
]


@pytest.mark.parametrize(("data", "needle"), NOT_JSON_BODIES)
async def test_invoke_body_that_is_not_standard_json_is_a_bad_request(
    api: Api, scheduler: FakeScheduler, data: bytes, needle: str
) -> None:
    await create_hello(api)

    status, body, _ = await api("POST", f"{ACTIONS}/hello?blocking=true", data=data)

    assert status == 400
    assert needle in body["error"]
    assert body["error"].startswith("The request content was malformed")
    assert scheduler.received == []


@pytest.mark.parametrize(("data", "needle"), NOT_JSON_BODIES)
async def test_action_document_that_is_not_standard_json_is_never_stored(
    api: Api, data: bytes, needle: str
) -> None:
    document = (
        b'{"exec": {"kind": "python:3", "code": "x"}, '
        b'"parameters": [{"key": "p", "value": ' + data + b"}]}"
    )

    status, body, _ = await api("PUT", f"{ACTIONS}/hello", data=document)
    get_status, _, _ = await api("GET", f"{ACTIONS}/hello")

    assert status == 400
    assert needle in body["error"]
    assert get_status == 404


async def test_nesting_up_to_the_limit_is_accepted(api: Api) -> None:
    await create_hello(api)
    deep = "[" * 127 + "]" * 127

    status, record, _ = await api(
        "POST", f"{ACTIONS}/hello?blocking=true", data=f'{{"x": {deep}}}'
    )

    assert status == 200
    assert record["response"]["result"]["echo"]["x"] == json.loads(deep)


async def test_gzip_encoded_body_is_decoded(api: Api) -> None:
    await create_hello(api)

    status, result, _ = await api(
        "POST",
        f"{ACTIONS}/hello?blocking=true&result=true",
        data=gzip.compress(b'{"n": 7}'),
        headers={"Content-Encoding": "gzip"},
    )

    assert status == 200
    assert result == {"echo": {"greeting": "hello", "n": 7}}


@pytest.mark.parametrize(
    ("encoding", "data", "expected", "needle"),
    [
        ("gzip", b'{"n": 7}', 400, "not valid gzip data"),
        ("gzip", gzip.compress(b'{"n": 7}')[:-6], 400, "truncated"),
        ("deflate", b"\x00garbage", 400, "not valid deflate data"),
        ("br", b'{"n": 7}', 415, "The content encoding 'br' is not supported"),
    ],
)
async def test_body_that_does_not_match_its_content_encoding_is_refused(
    api: Api, encoding: str, data: bytes, expected: int, needle: str
) -> None:
    await create_hello(api)

    status, body, _ = await api(
        "POST",
        f"{ACTIONS}/hello?blocking=true",
        data=data,
        headers={"Content-Encoding": encoding},
    )
    after, _, _ = await api("GET", f"{ACTIONS}/hello")

    assert status == expected
    assert needle in body["error"]
    assert set(body) == {"error", "code"}
    assert after == 200


async def test_non_finite_number_in_a_result_is_answered_as_null(api: Api) -> None:
    await create_hello(api)

    status, record, _ = await api(
        "POST", f"{ACTIONS}/hello?blocking=true", json={"mode": "nan"}
    )
    _, fetched, _ = await api("GET", f"{ACTIVATIONS}/{record['activationId']}")

    assert status == 200
    assert record["response"]["result"] == {"nan": None, "inf": [None, 1.5]}
    assert fetched["response"]["result"] == {"nan": None, "inf": [None, 1.5]}


# DIVERGENCE(openwhisk): OpenWhisk takes an empty flag as its default (`?blocking=`
# is a non-blocking invoke); Wisp refuses it, as any other value that is not a boolean.
@pytest.mark.parametrize("query", ["blocking=", "blocking", "result=", "blocking=2"])
async def test_empty_or_unknown_boolean_flag_is_a_bad_request(
    api: Api, scheduler: FakeScheduler, query: str
) -> None:
    await create_hello(api)

    status, body, _ = await api("POST", f"{ACTIONS}/hello?{query}")

    assert status == 400
    assert "must be true or false" in body["error"]
    assert scheduler.received == []


@pytest.mark.parametrize("value", ["true", "TRUE", "yes", "on", "1"])
async def test_boolean_flag_accepts_the_words_openwhisk_accepts(
    api: Api, value: str
) -> None:
    await create_hello(api)

    status, record, _ = await api("POST", f"{ACTIONS}/hello?blocking={value}")

    assert status == 200
    assert record["response"]["success"] is True


async def test_invoke_with_bad_timeout_is_a_bad_request(api: Api) -> None:
    await create_hello(api)

    status, body, _ = await api("POST", f"{ACTIONS}/hello?blocking=true&timeout=0")

    assert status == 400
    assert "timeout" in body["error"]


async def test_invoke_without_scheduler_is_unavailable(
    api_factory: Callable[..., Awaitable[Api]],
) -> None:
    api = await api_factory()
    await create_hello(api)

    status, body, _ = await api("POST", f"{ACTIONS}/hello?blocking=true")

    assert status == 503
    assert_error(body, "No scheduler endpoint available")


async def test_throttled_namespace_gets_too_many_requests(
    api: Api, etcd: MemoryEtcd
) -> None:
    await create_hello(api)
    await etcd.put(KEYS.namespace_throttling("guest"), "true")

    for _ in range(100):
        status, body, _ = await api("POST", f"{ACTIONS}/hello")
        if status == 429:
            break
        await asyncio.sleep(0.02)

    assert status == 429
    assert_error(body, "Too many requests")


async def test_per_minute_limit_gets_too_many_requests(
    api_factory: Callable[..., Awaitable[Api]], scheduler: FakeScheduler
) -> None:
    api = await api_factory(**{"limits.invocations_per_minute": 1})
    await create_hello(api)
    first, _, _ = await api("POST", f"{ACTIONS}/hello")

    status, body, _ = await api("POST", f"{ACTIONS}/hello")

    assert first == 202
    assert status == 429
    assert body["error"].startswith("Too many requests in the last minute")


# --- activations -------------------------------------------------------------------------------


async def test_activation_result_logs_and_list(api: Api) -> None:
    await create_hello(api)
    ids = []
    for n in range(3):
        _, body, _ = await api("POST", f"{ACTIONS}/hello?blocking=true", json={"n": n})
        ids.append(body["activationId"])

    list_status, listed, _ = await api("GET", f"{ACTIVATIONS}?limit=2")
    named_status, named, _ = await api("GET", f"{ACTIVATIONS}?name=hello")
    result_status, result, _ = await api("GET", f"{ACTIVATIONS}/{ids[0]}/result")
    logs_status, logs, _ = await api("GET", f"{ACTIVATIONS}/{ids[0]}/logs")

    assert list_status == 200 and len(listed) == 2
    assert all("logs" not in a and "statusCode" in a for a in listed)
    assert named_status == 200 and {a["activationId"] for a in named} == set(ids)
    assert result_status == 200
    assert result["result"] == {"echo": {"greeting": "hello", "n": 0}}
    assert result["success"] is True
    assert (logs_status, logs) == (200, {"logs": ["stdout: ran hello"]})


async def test_unknown_activation_is_not_found(api: Api) -> None:
    status, body, _ = await api("GET", f"{ACTIVATIONS}/{'0' * 32}")
    bad_status, _, _ = await api("GET", f"{ACTIVATIONS}/not-an-id")

    assert status == 404
    assert_error(body, "The requested resource does not exist.")
    assert bad_status == 400


# --- admin ---------------------------------------------------------------------------------------


async def test_admin_reports_invokers_and_in_flight_count(
    api: Api, etcd: MemoryEtcd
) -> None:
    await etcd.put(KEYS.invoker(0), json.dumps({"status": "up"}))
    await etcd.put(KEYS.invoker(2), json.dumps({"status": "unhealthy"}))
    await create_hello(api)
    await api(
        "POST", f"{ACTIONS}/hello?blocking=true&timeout=50", json={"mode": "slow"}
    )

    _, invokers, _ = await api("GET", "/invokers", auth=None)
    _, healthy, _ = await api("GET", "/invokers/healthy/count", auth=None)
    _, count, _ = await api("GET", "/activation/count", auth=None)

    assert invokers == {"invoker0": "up", "invoker1": "down", "invoker2": "unhealthy"}
    assert healthy == 1
    assert count == 1


async def test_guest_namespace_exists_after_the_first_start(
    api: Api, store: MemoryStore
) -> None:
    guest = await store.identity_by_namespace("guest")

    assert guest == GUEST_IDENTITY


async def test_actions_and_activations_survive_a_restart_on_sqlite(
    etcd: MemoryEtcd, broker: MemoryBroker, tmp_path: Path, scheduler: FakeScheduler
) -> None:
    path = tmp_path / "wisp.db"
    first_store = await SqliteStore.open(path)
    scheduler.use_store(first_store)
    controller = await _start_controller(etcd, broker, first_store, controller_config())
    async with aiohttp.ClientSession(f"http://127.0.0.1:{controller.port}") as session:
        headers = {"Authorization": GUEST_AUTH}
        async with session.put(f"{ACTIONS}/hello", json=HELLO, headers=headers) as r:
            created = await r.json()
        async with session.post(f"{ACTIONS}/hello?blocking=true", headers=headers) as r:
            invoked = await r.json()
    await controller.stop()
    await first_store.close()

    second_store = await SqliteStore.open(path)
    scheduler.use_store(second_store)
    controller = await _start_controller(
        etcd, broker, second_store, controller_config()
    )
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{controller.port}"
        ) as session:
            headers = {"Authorization": GUEST_AUTH}
            async with session.get(f"{ACTIONS}/hello", headers=headers) as r:
                action_status, action = r.status, await r.json()
            activation_id = invoked["activationId"]
            async with session.get(
                f"{ACTIVATIONS}/{activation_id}", headers=headers
            ) as r:
                activation_status = r.status
    finally:
        await controller.stop()
        await second_store.close()

    assert (action_status, action) == (200, created)
    assert activation_status == 200


# --- activation journal ------------------------------------------------------------------


async def test_activation_in_flight_at_a_restart_ends_with_a_lost_record(
    etcd: MemoryEtcd, broker: MemoryBroker, store: MemoryStore, scheduler: FakeScheduler
) -> None:
    controller = await _start_controller(etcd, broker, store, controller_config())
    async with aiohttp.ClientSession(f"http://127.0.0.1:{controller.port}") as session:
        headers = {"Authorization": GUEST_AUTH}
        async with session.put(f"{ACTIONS}/hello", json=HELLO, headers=headers) as r:
            assert r.status == 200
        async with session.post(
            f"{ACTIONS}/hello", json={"mode": "slow"}, headers=headers
        ) as r:
            accepted = await r.json()
    journaled = await store.journal_entries("0")
    await controller.stop()

    restarted = await _start_controller(etcd, broker, store, controller_config())
    try:
        record = await store.get_activation("guest", accepted["activationId"])
        left = await store.journal_entries("0")
    finally:
        await restarted.stop()

    assert [e.activation_id for e in journaled] == [accepted["activationId"]]
    assert record is not None
    assert record.response.result == {"error": LOST_TEXT}
    assert record.annotations["path"] == "guest/hello"
    assert left == []


async def test_completed_activations_leave_the_journal(
    etcd: MemoryEtcd, broker: MemoryBroker, store: MemoryStore, scheduler: FakeScheduler
) -> None:
    controller = await _start_controller(etcd, broker, store, controller_config())
    async with aiohttp.ClientSession(f"http://127.0.0.1:{controller.port}") as session:
        headers = {"Authorization": GUEST_AUTH}
        async with session.put(f"{ACTIONS}/hello", json=HELLO, headers=headers) as r:
            assert r.status == 200
        for n in range(3):
            async with session.post(
                f"{ACTIONS}/hello?blocking=true", json={"n": n}, headers=headers
            ) as r:
                assert r.status == 200
        async with session.post(
            f"{ACTIONS}/hello", json={"mode": "slow"}, headers=headers
        ) as r:
            accepted = await r.json()

    await controller.stop()

    left = await store.journal_entries("0")
    assert [e.activation_id for e in left] == [accepted["activationId"]]
