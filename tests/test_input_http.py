"""The http input driven over real HTTP requests (aiohttp client), with a real
BatchBuffer as ingest."""

from __future__ import annotations

import asyncio
import base64
import gzip
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from logstream.buffer import BatchBuffer
from logstream.inputs.http import HttpInput, HttpInputConfig
from logstream.units import BuildContext
from tests.support.inputs import Runner, numbered, running, take, take_until_quiet

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def run() -> Runner:
    return Runner("uvloop")


def http_input(**settings: Any) -> HttpInput:
    config = HttpInputConfig(type="http", listen="127.0.0.1:0", **settings)
    return config.build("http", BuildContext())


def url(unit: HttpInput, path: str = "/") -> str:
    host, port = unit.address
    return f"http://{host}:{port}{path}"


async def post(
    unit: HttpInput, body: bytes, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, Any]:
    async with (
        ClientSession() as session,
        session.request(method, url(unit), data=body, headers=headers) as resp,
    ):
        raw = await resp.read()
        try:
            return resp.status, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return resp.status, raw


def test_object_is_one_event_with_host_from_client(run: Runner) -> None:
    """A JSON object becomes one event; `host` defaults to the client address."""
    unit = http_input()

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)) as ingest:
            status, body = await post(unit, orjson.dumps({"message": "hi"}))
            assert (status, body) == (200, {"accepted": 1})
            [event] = await take(ingest, 1)
            assert event["message"] == "hi"
            assert event["host"] == "127.0.0.1"
            assert event["@version"] == "1"

    run(scenario())
    assert unit.metrics.events_in == 1
    assert unit.metrics.bytes_in == len(b'{"message":"hi"}')


def test_array_is_many_events_and_keeps_their_host(run: Runner) -> None:
    """A JSON array gives one event per element; non-objects are tagged, not lost."""
    unit = http_input()

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)) as ingest:
            status, body = await post(unit, orjson.dumps([*numbered(3), 7]))
            assert (status, body) == (200, {"accepted": 4})
            events = await take(ingest, 4)
            assert [e.get("seq") for e in events[:3]] == [0, 1, 2]
            assert all(e["host"] == "web-1" for e in events[:3])
            assert events[3]["tags"] == ["_jsonparsefailure"]
            assert events[3]["message"] == "7"

    run(scenario())
    assert unit.metrics.decode_issues["json_parse_failure"] == 1


def test_ndjson_keeps_good_lines_and_tags_bad_ones(run: Runner) -> None:
    """NDJSON (declared or detected) gives one event per line; bad lines are tagged."""
    unit = http_input()
    body = b'{"a":1}\n\nnot json\r\n{"a":2}\n'

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)) as ingest:
            assert (await post(unit, body, NDJSON))[0] == 200
            assert (await post(unit, body))[1] == {"accepted": 3}  # detected
            events = await take(ingest, 6)
            assert [e.get("a") for e in events] == [1, None, 2] * 2
            assert events[1]["tags"] == ["_jsonparsefailure"]
            assert events[1]["message"] == "not json"

    run(scenario())
    assert unit.metrics.decode_issues["json_parse_failure"] == 2


def test_gzip_body_is_inflated(run: Runner) -> None:
    unit = http_input()
    body = gzip.compress(orjson.dumps(numbered(5)))

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)) as ingest:
            status, _ = await post(unit, body, {"Content-Encoding": "gzip"})
            assert status == 200
            assert [e["seq"] for e in await take(ingest, 5)] == list(range(5))
            broken = await post(unit, body[:-10], {"Content-Encoding": "gzip"})
            assert broken[0] == 400
            assert (await post(unit, body, {"Content-Encoding": "br"}))[0] == 415

    run(scenario())


def test_zip_bomb_is_refused_within_the_bound(run: Runner) -> None:
    """A small gzip body that inflates past max_decompressed_bytes gets 413, nothing taken."""
    unit = http_input(max_decompressed_bytes=1024 * 1024)
    bomb = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")
    assert len(bomb) < 100_000

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)) as ingest:
            status, _ = await post(unit, bomb, {"Content-Encoding": "gzip"})
            assert status == 413
            assert await take_until_quiet(ingest, 0.05) == []

    run(scenario())
    assert unit.refused[413] == 1


def test_oversized_body_gets_413(run: Runner) -> None:
    unit = http_input(max_body_bytes=1000)

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)):
            status, _ = await post(unit, orjson.dumps({"message": "x" * 2000}))
            assert status == 413
            status, _ = await post(unit, orjson.dumps({"message": "x" * 900}))
            assert status == 200

    run(scenario())
    assert unit.refused[413] == 1


def test_full_pipeline_gets_429_then_200_after_draining(run: Runner) -> None:
    """When ingest is full a request is refused whole (429, counted); after a drain, taken."""
    unit = http_input()

    async def scenario() -> None:
        async with running(unit, BatchBuffer(3)) as ingest:
            assert (await post(unit, orjson.dumps(numbered(3))))[0] == 200
            assert ingest.full
            assert (await post(unit, orjson.dumps(numbered(2))))[0] == 429
            await take(ingest, 3)
            assert (await post(unit, orjson.dumps(numbered(2))))[0] == 200
            assert len(ingest) == 2

    run(scenario())
    assert unit.refused[429] == 1
    assert unit.metrics.dropped["ingest_full"] == 2
    assert unit.metrics.events_in == 5


def test_basic_auth_accepts_the_right_credentials_only(run: Runner) -> None:
    unit = http_input(username="u", password="p")  # noqa: S106  # a test credential

    def basic(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)):
            body = orjson.dumps({"message": "hi"})
            assert (await post(unit, body, basic("u", "p")))[0] == 200
            assert (await post(unit, body, basic("u", "wrong")))[0] == 401
            assert (await post(unit, body))[0] == 401

    run(scenario())
    assert unit.refused[401] == 2
    assert unit.metrics.events_in == 1


def test_body_that_is_not_json_gets_400(run: Runner) -> None:
    unit = http_input()

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)) as ingest:
            for body in (b"not json", b"", b"42", b"no\nlines\nparse"):
                assert (await post(unit, body))[0] == 400, body
            assert await take_until_quiet(ingest, 0.05) == []

    run(scenario())
    assert unit.refused[400] == 4


def test_wrong_method_and_wrong_path_are_refused(run: Runner) -> None:
    unit = http_input(path="/ingest")

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)), ClientSession() as session:
            async with session.get(url(unit, "/ingest")) as resp:
                assert resp.status == 405
            async with session.post(url(unit, "/"), data=b"{}") as resp:
                assert resp.status == 404
            async with session.post(url(unit, "/ingest"), data=b"{}") as resp:
                assert resp.status == 200

    run(scenario())


def test_kept_headers_are_copied_into_events(run: Runner) -> None:
    unit = http_input(keep_headers=["X-Request-Id"])

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)) as ingest:
            await post(unit, b'{"message":"hi"}', {"X-Request-Id": "abc", "X-Other": "no"})
            [event] = await take(ingest, 1)
            assert event["headers"] == {"x-request-id": "abc"}

    run(scenario())


def test_stop_closes_the_server(run: Runner) -> None:
    unit = http_input()

    async def scenario() -> None:
        async with running(unit, BatchBuffer(100)):
            pass
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*unit.address)

    run(scenario())


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValidationError, match="username and password"):
        HttpInputConfig(type="http", username="u")
    with pytest.raises(ValidationError, match="path"):
        HttpInputConfig(type="http", path="ingest")
    with pytest.raises(ValidationError):
        HttpInputConfig(type="http", bogus=1)  # type: ignore[call-arg]
    assert HttpInputConfig(type="http").listen == "127.0.0.1:8080"


# --------------------------------------------------------------------------- property


@pytest.fixture(scope="module")
def served() -> Iterator[HttpInput]:
    """An http input on a loop in its own thread, for synchronous hypothesis examples."""
    unit = http_input(max_body_bytes=4096, max_decompressed_bytes=8192)
    loop = asyncio.new_event_loop()
    ingest = BatchBuffer(1_000_000)
    errors: list[Any] = []
    loop.set_exception_handler(lambda _, ctx: errors.append(ctx))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(unit.start(ingest), loop).result(10)
    try:
        yield unit
    finally:
        asyncio.run_coroutine_threadsafe(unit.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert not errors, errors


bodies = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(str.encode),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats()
        | st.text(max_size=10),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids),
        max_leaves=10,
    ).map(orjson.dumps),
    st.lists(st.binary(max_size=40), max_size=6).map(b"\n".join),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, gz=st.booleans(), ndjson=st.booleans())
def test_any_body_gets_an_answer(served: HttpInput, body: bytes, gz: bool, ndjson: bool) -> None:
    """Whatever the body, the input answers 2xx or 4xx (never 5xx, never a dropped connection)."""
    headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    # S310 ignored below: the URL is the test server's own http:// address.
    request = urllib.request.Request(url(served), data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as error:
        status = error.code
    assert 200 <= status < 500, status


def test_connections_beyond_the_limit_are_refused_and_counted_idle_ones_closed(
    run: Runner,
) -> None:
    request = b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{"seq": 1} '

    async def scenario() -> tuple[bytes, bytes, int]:
        unit = http_input(max_connections=2, idle_timeout_secs=0.3)
        async with running(unit, BatchBuffer(100)) as ingest:
            held = [await asyncio.open_connection(*unit.address) for _ in range(2)]
            await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_connection(*unit.address)
            refused = await asyncio.wait_for(reader.read(), 2)  # closed at once
            writer.close()
            # A kept-alive client answered, then closed once idle past the timeout.
            reader, writer = held[0]
            writer.write(request)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 3)
            await take(ingest, 1)
            for _, other in held:
                other.close()
            return refused, answer, unit.metrics.dropped["too_many_connections"]

    refused, answer, counted = run(scenario())
    assert refused == b""
    assert counted == 1
    assert answer.startswith(b"HTTP/1.1 200")  # then EOF: the idle connection was closed
