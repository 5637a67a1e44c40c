"""The WebSocket server over real sockets: real websockets clients on 127.0.0.1, port 0.

Each test runs its own event loop (``run``) with a hang guard; assertions are about
what clients receive, never about how long it took. A client "stops reading" by not
calling ``recv`` with a receive queue of one frame: the library then stops reading the
socket, and the kernel buffers fill.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.config import GatewayConfig, WebSocketConfig
from gateway.outputs.websocket import WebSocketOutput, build
from gateway.outputs.websocket.client_protocol import hard_size_limit
from gateway.outputs.websocket.hub import MAX_FILTERS
from gateway.outputs.websocket.server import SEND_BATCH
from gateway.runtime.envelope import Envelope
from gateway.runtime.http import HttpEndpoints
from gateway.runtime.journal import Journal
from gateway.runtime.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.runtime.output import OutputContext
from gateway.runtime.status import DeviceStatus
from protocol.errors import GatewayError
from protocol.events import Frame

GUARD = 10.0
"""Seconds after which a test is considered hung (a guard, not a timing assertion)."""

ENVELOPE_KEYS = {"type", "seq", "device", "message", "cmd", "time", "fields"}
READ, COMMAND = "read-token", "command-token"


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(GUARD):
            await main()

    asyncio.run(guarded())


@pytest.fixture(autouse=True)
def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> Any:
    """A handler that crashes is logged by websockets, not raised: fail on any error log."""
    caplog.set_level(logging.INFO)
    yield
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


class FakeCommands:
    """The gateway's command sink: knows node-1 only, records what it sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        if device != "node-1":
            raise GatewayError(f"no device {device!r}: known devices are node-1")
        self.calls.append((device, message, fields))


@dataclass
class Gateway:
    """The WebSocket output as the gateway sees it, with the journal that numbers messages."""

    output: WebSocketOutput
    journal: Journal
    metrics: GatewayMetrics
    commands: FakeCommands = field(default_factory=FakeCommands)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.output.server.port}/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.output.server.port}"

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def publish(self, device: str = "node-1", message: str = "environment", **fields: Any) -> int:
        published = self.journal.append(envelope(device, message, **fields))
        self.output.deliver(published)
        return published.seq

    def status(self, device: str, online: bool, reason: str) -> None:
        self.output.device_status(DeviceStatus(device, online, reason, time.time()))

    @property
    def buffered(self) -> int:
        """Messages the hub holds for clients that are behind."""
        return self.output.hub.statistics().buffered

    async def close(self, seconds: float = GUARD) -> None:
        await self.output.close(asyncio.get_running_loop().time() + seconds)


def envelope(device: str, message: str = "environment", **fields: Any) -> Envelope:
    frame = Frame(
        offset=0,
        cmd=0x10,
        message=message,
        fields=fields or {"temperature": 21.5},
        payload=b"",
        raw=b"",
    )
    return Envelope(device, frame, received=1764063421.25)


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[Gateway]:
    """The WebSocket output built by its factory, started on a free port; ``/healthz``
    says how many clients it has."""
    config = GatewayConfig(websocket=WebSocketConfig(host="127.0.0.1", port=0, **options))
    metrics = GatewayMetrics()
    commands = FakeCommands()
    journal = Journal(history=config.websocket.history)
    outputs: list[WebSocketOutput] = []

    def health() -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok", "clients": outputs[0].health()["clients"]}

    output = build(
        OutputContext(
            config=config,
            metrics=metrics,
            journal=journal,
            http=HttpEndpoints(health=health, metrics=metrics),
            schemas={},
            hello=lambda: {"type": "hello", "version": "test", "devices": ["node-1"]},
            commands=commands,
        )
    )
    assert isinstance(output, WebSocketOutput)
    outputs.append(output)
    await output.start()
    gateway = Gateway(output, journal, metrics, commands)
    try:
        yield gateway
    finally:
        await gateway.close()


async def client(gateway: Gateway, query: str = "", **options: Any) -> ClientConnection:
    """A connected client whose greeting was read and checked."""
    websocket = await connect(gateway.url + query, **options)
    hello = await receive(websocket)
    assert hello["type"] == "hello"
    return websocket


async def receive(websocket: ClientConnection) -> dict[str, Any]:
    data = await websocket.recv()
    assert isinstance(data, str), "the server sends text frames"
    record = orjson.loads(data)
    assert isinstance(record, dict)
    return record


async def request(websocket: ClientConnection, record: dict[str, Any]) -> dict[str, Any]:
    """Send ``record`` and return the next thing received (the reply, in these tests)."""
    await websocket.send(orjson.dumps(record).decode())
    return await receive(websocket)


async def subscribe(websocket: ClientConnection, *filters: str) -> None:
    reply = await request(websocket, {"type": "subscribe", "filters": list(filters)})
    assert reply["type"] == "subscribed", reply


async def messages_until(websocket: ClientConnection, last: int) -> list[dict[str, Any]]:
    """Receive until the message numbered ``last``; fail on anything but messages."""
    received: list[dict[str, Any]] = []
    while not received or received[-1]["seq"] < last:
        record = await receive(websocket)
        assert record["type"] == "message", record
        received.append(record)
    return received


async def read_until_closed(websocket: ClientConnection) -> tuple[list[int], ConnectionClosed]:
    """The seq of every message received until the connection closed, and how it closed."""
    seqs: list[int] = []
    while True:
        try:
            record = await receive(websocket)
        except ConnectionClosed as closed:
            return seqs, closed
        assert record["type"] == "message", record
        seqs.append(record["seq"])


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait for a condition that another task makes true (under the test's hang guard)."""
    while not predicate():
        await asyncio.sleep(0.005)


# Greeting, subscriptions, delivery.


def test_hello_on_connect() -> None:
    async def main() -> None:
        async with running() as gateway:
            gateway.publish()
            gateway.publish()
            async with connect(gateway.url) as websocket:
                hello = await receive(websocket)
                assert hello == {
                    "type": "hello",
                    "version": "test",
                    "devices": ["node-1"],
                    "seq": 2,
                }
                await eventually(lambda: gateway.sample("tgw_websocket_clients") == 1)
            await eventually(lambda: gateway.sample("tgw_websocket_clients") == 0)

    run(main)


def test_subscribers_receive_matching_messages_in_order() -> None:
    async def main() -> None:
        async with running() as gateway:
            node1 = await client(gateway)
            everything = await client(gateway)
            await subscribe(node1, "node-1/+")
            await subscribe(everything, "#")
            gateway.publish("node-1", "environment", temperature=20.25)  # 1
            gateway.publish("node-2", "environment")  # 2
            gateway.publish("node-1", "power", battery=3700)  # 3
            gateway.publish("node-2", "power")  # 4
            last = gateway.publish("node-1", "status", uptime=7)  # 5
            got = await messages_until(node1, last)
            assert [m["seq"] for m in got] == [1, 3, 5]
            assert all(set(m) == ENVELOPE_KEYS for m in got)
            assert got[0] == {
                "type": "message",
                "seq": 1,
                "device": "node-1",
                "message": "environment",
                "cmd": 0x10,
                "time": 1764063421.25,
                "fields": {"temperature": 20.25},
            }
            assert got[1]["fields"] == {"battery": 3700}
            all_messages = await messages_until(everything, last)
            assert [m["seq"] for m in all_messages] == [1, 2, 3, 4, 5]
            assert gateway.sample("tgw_websocket_messages_sent_total") == 8
            await node1.close()
            await everything.close()

    run(main)


def test_unsubscribe_and_statuses() -> None:
    async def main() -> None:
        async with running() as gateway:
            websocket = await client(gateway)
            reply = await request(
                websocket, {"type": "subscribe", "filters": ["node-1/+", "node-2/+"], "id": "s1"}
            )
            assert reply == {"type": "subscribed", "filters": ["node-1/+", "node-2/+"], "id": "s1"}
            reply = await request(
                websocket, {"type": "unsubscribe", "filters": ["node-1/+", "node-7/+"]}
            )
            assert reply == {"type": "unsubscribed", "filters": ["node-2/+"]}
            gateway.publish("node-1")
            gateway.status("node-9", False, "silent for 10 s")
            last = gateway.publish("node-2")
            status = await receive(websocket)  # statuses are not filtered
            assert status["type"] == "status"
            assert (status["device"], status["online"], status["reason"]) == (
                "node-9",
                False,
                "silent for 10 s",
            )
            assert [m["seq"] for m in await messages_until(websocket, last)] == [last]
            await websocket.close()

    run(main)


# Slow subscribers.


async def fill_slow_client(
    gateway: Gateway, fast: ClientConnection, overflowed: Callable[[], bool]
) -> int:
    """Publish big messages, each received by ``fast`` before the next, until the slow
    client's queue ``overflowed``; return how many were published."""
    blob = "x" * 32768
    published = 0
    while not overflowed():
        assert published < 5000, "the slow client never fell behind"
        seq = gateway.publish(blob=blob)
        published += 1
        record = await receive(fast)
        assert record["seq"] == seq
    for _ in range(5):
        seq = gateway.publish(blob=blob)
        published += 1
        assert (await receive(fast))["seq"] == seq
    return published


def test_slow_subscriber_drops_and_is_told_without_delaying_others() -> None:
    async def main() -> None:
        async with running(queue_size=4, slow_policy="drop") as gateway:
            fast = await client(gateway)
            slow = await client(gateway, max_queue=1)
            await subscribe(fast, "#")
            await subscribe(slow, "#")
            dropped = "tgw_websocket_messages_dropped_total"
            published = await fill_slow_client(
                gateway, fast, lambda: gateway.sample(dropped, reason="slow_subscriber") > 0
            )
            # The slow client reads at last: what it got plus what it was told it lost
            # accounts for every message.
            seqs: list[int] = []
            lost = 0
            while len(seqs) + lost < published:
                record = await receive(slow)
                if record["type"] == "dropped":
                    lost += record["count"]
                else:
                    assert record["type"] == "message"
                    seqs.append(record["seq"])
            assert lost > 0
            assert lost == gateway.sample(dropped, reason="slow_subscriber")
            assert seqs == sorted(set(seqs))
            assert seqs[-1] < published  # the newest were dropped, not the oldest
            # Both still work.
            seq = gateway.publish()
            assert (await receive(fast))["seq"] == seq
            assert (await receive(slow))["seq"] == seq
            await fast.close()
            await slow.close()

    run(main)


def test_slow_subscriber_is_disconnected_without_delaying_others() -> None:
    async def main() -> None:
        async with running(queue_size=4, slow_policy="disconnect") as gateway:
            fast = await client(gateway)
            slow = await client(gateway, max_queue=1)
            await subscribe(fast, "#")
            await subscribe(slow, "#")
            await fill_slow_client(
                gateway,
                fast,
                lambda: gateway.sample("tgw_websocket_disconnects_total", reason="slow") > 0,
            )
            seqs, closed = await read_until_closed(slow)
            assert seqs == sorted(set(seqs))
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1008
            assert re.fullmatch(r"too slow: \d+ messages behind", closed.rcvd.reason)
            seq = gateway.publish()
            assert (await receive(fast))["seq"] == seq
            await eventually(lambda: gateway.sample("tgw_websocket_clients") == 1)
            await fast.close()

    run(main)


# Resuming after a reconnect.


def test_resume_with_since_gets_exactly_the_missed_messages() -> None:
    async def main() -> None:
        async with running() as gateway:
            websocket = await client(gateway)
            await subscribe(websocket, "node-1/+")
            for _ in range(3):
                gateway.publish("node-1")
                gateway.publish("node-2")
            seen = [m["seq"] for m in await messages_until(websocket, 5)]
            assert seen == [1, 3, 5]
            await websocket.close()
            missed = [gateway.publish(device) for device in ("node-1", "node-2") * 3]

            websocket = await client(gateway)
            reply = await request(
                websocket, {"type": "subscribe", "filters": ["node-1/+"], "since": seen[-1]}
            )
            assert reply == {"type": "subscribed", "filters": ["node-1/+"]}
            live = gateway.publish("node-1")
            got = [m["seq"] for m in await messages_until(websocket, live)]
            assert got == [*missed[0::2], live]
            await websocket.close()

    run(main)


def test_resume_while_publishing_has_no_gap_and_no_duplicate() -> None:
    # The replay is big enough to fill the write buffer, so it waits for the socket
    # while the publisher goes on: live messages must queue behind the replay.
    blob = "x" * 32768

    async def main() -> None:
        async with running(queue_size=10000) as gateway:
            for _ in range(200):
                gateway.publish(blob=blob)
            last = 0

            async def publish() -> None:
                nonlocal last
                for _ in range(300):
                    last = gateway.publish(blob=blob)
                    await asyncio.sleep(0)

            websocket = await client(gateway)
            async with asyncio.TaskGroup() as group:
                group.create_task(publish())
                reply = await request(
                    websocket, {"type": "subscribe", "filters": ["#"], "since": 20}
                )
                assert reply["type"] == "subscribed"
            got = [m["seq"] for m in await messages_until(websocket, last)]
            assert got == list(range(21, 501))
            await websocket.close()

    run(main)


def test_subscribe_with_since_while_messages_are_queued_replays_each_once() -> None:
    # The client is subscribed but does not read: the server's sender is stuck with
    # messages queued. A subscribe with since=0 replays everything once; the queued
    # messages the replay covered are not sent again.
    blob = "x" * 32768

    async def main() -> None:
        async with running(queue_size=10000) as gateway:
            websocket = await client(gateway, max_queue=1)
            await subscribe(websocket, "#")
            last = 0
            # Live messages go straight to the socket while it takes them: publish until
            # the kernel's buffers are full and the hub has to queue some.
            while gateway.buffered < SEND_BATCH + 50:  # more than one sender batch
                last = gateway.publish(blob=blob)
                assert last < 10_000, "the server never had to queue"
            await websocket.send(
                orjson.dumps({"type": "subscribe", "filters": ["#"], "since": 0}).decode()
            )
            before: list[int] = []
            while (record := await receive(websocket))["type"] == "message":
                before.append(record["seq"])
            assert record["type"] == "subscribed"
            assert before == list(range(1, len(before) + 1))
            assert len(before) < last  # some were still queued
            live = gateway.publish()
            got = [m["seq"] for m in await messages_until(websocket, live)]
            assert got == list(range(1, live + 1))
            await websocket.close()

    run(main)


def test_history_gap_is_reported_then_what_remains_is_replayed() -> None:
    async def main() -> None:
        async with running(history=5) as gateway:
            for _ in range(10):
                gateway.publish()
            websocket = await client(gateway)
            reply = await request(
                websocket, {"type": "subscribe", "filters": ["#"], "since": 2, "id": 9}
            )
            assert reply["type"] == "subscribed"
            error = await receive(websocket)
            assert error["type"] == "error"
            assert error["code"] == "history_gap"
            assert error["oldest"] == 6
            assert error["id"] == 9
            assert "messages 3 to 5" in error["message"]
            assert "6" in error["message"]
            live = gateway.publish()
            assert [m["seq"] for m in await messages_until(websocket, live)] == [6, 7, 8, 9, 10, 11]
            assert gateway.sample("tgw_websocket_client_errors_total", code="history_gap") == 1
            await websocket.close()

    run(main)


# Bad input: an error reply, and the connection still works.

MAX_MESSAGE_SIZE = 256

BAD_INPUTS: list[tuple[str | bytes, str]] = [
    # One of each code a message alone can cause: test_client_protocol has them all.
    ("{nope", "bad_json"),
    (b'{"type": "subscribe", "filters": ["#"]}', "bad_json"),
    ("[1, 2]", "not_an_object"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"type": "subscribe", "filters": "#"}', "bad_request"),
    ('{"type": "subscribe", "filters": ["a/#/b"]}', "bad_filter"),
    ("é" * (MAX_MESSAGE_SIZE // 2 + 1), "too_large"),
    ('{"type": "command", "device": "node-1", "message": "ping"}', "forbidden"),
]


@pytest.mark.parametrize(("data", "code"), BAD_INPUTS)
def test_bad_input_gets_an_error_and_the_connection_stays(data: str | bytes, code: str) -> None:
    async def main() -> None:
        async with running(max_message_size=MAX_MESSAGE_SIZE) as gateway:
            websocket = await client(gateway)
            await websocket.send(data)
            error = await receive(websocket)
            assert error["type"] == "error", error
            assert error["code"] == code, error
            assert set(error) == {"type", "code", "message"}
            assert error["message"] == error["message"].lower()
            assert gateway.sample("tgw_websocket_client_errors_total", code=code) == 1
            reply = await request(websocket, {"type": "subscribe", "filters": ["#"], "id": "ok"})
            assert reply == {"type": "subscribed", "filters": ["#"], "id": "ok"}
            await websocket.close()

    run(main)


def test_errors_carry_the_request_id() -> None:
    async def main() -> None:
        async with running() as gateway:
            websocket = await client(gateway)
            error = await request(websocket, {"type": "dance", "id": {"n": 1}})
            assert error["code"] == "unknown_type"
            assert error["id"] == {"n": 1}
            assert "'dance'" in error["message"]
            await websocket.close()

    run(main)


def test_a_message_over_the_hard_limit_closes_the_connection() -> None:
    async def main() -> None:
        async with running(max_message_size=64) as gateway:
            websocket = await client(gateway)
            await websocket.send("x" * (hard_size_limit(64) + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009

    run(main)


# Tokens and commands.


def test_tokens_are_required_when_configured() -> None:
    async def main() -> None:
        async with running(read_tokens=(READ,), command_tokens=(COMMAND,)) as gateway:
            for url in (gateway.url, gateway.url + "?token=wrong"):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(url)
                assert refused.value.response.status_code == 401
            with pytest.raises(InvalidStatus) as refused:
                await connect(gateway.url, additional_headers={"Authorization": "Bearer nope"})
            assert refused.value.response.status_code == 401
            assert gateway.sample("tgw_websocket_client_errors_total", code="unauthorized") == 3

    run(main)


def test_a_read_token_cannot_send_commands() -> None:
    async def main() -> None:
        async with running(read_tokens=(READ,), command_tokens=(COMMAND,)) as gateway:
            websocket = await client(
                gateway, additional_headers={"Authorization": f"Bearer {READ}"}
            )
            await subscribe(websocket, "#")
            error = await request(
                websocket,
                {"type": "command", "device": "node-1", "message": "ping", "fields": {}, "id": 1},
            )
            assert error["code"] == "forbidden"
            assert error["id"] == 1
            assert gateway.commands.calls == []
            await websocket.close()

    run(main)


def test_a_command_token_can_send_commands() -> None:
    async def main() -> None:
        async with running(read_tokens=(READ,), command_tokens=(COMMAND,)) as gateway:
            websocket = await client(
                gateway, additional_headers={"Authorization": "Bearer " + COMMAND}
            )
            reply = await request(
                websocket,
                {
                    "type": "command",
                    "device": "node-1",
                    "message": "set_rate",
                    "fields": {"interval": 5},
                    "id": "c1",
                },
            )
            assert reply == {
                "type": "command_sent",
                "device": "node-1",
                "message": "set_rate",
                "id": "c1",
            }
            assert gateway.commands.calls == [("node-1", "set_rate", {"interval": 5})]
            error = await request(
                websocket, {"type": "command", "device": "node-9", "message": "ping", "id": "c2"}
            )
            assert error["code"] == "command_failed"
            assert error["message"] == "no device 'node-9': known devices are node-1"
            assert error["id"] == "c2"
            error = await request(websocket, {"type": "command", "message": "ping"})
            assert error["code"] == "bad_request"
            assert error["message"] == "missing key 'device'"
            await subscribe(websocket, "#")
            await websocket.close()

            # The token may also come in the query string (browsers cannot set headers).
            websocket = await client(gateway, "?token=" + COMMAND)
            reply = await request(
                websocket, {"type": "command", "device": "node-1", "message": "ping"}
            )
            assert reply["type"] == "command_sent"
            await websocket.close()

    run(main)


def test_commands_are_rate_limited() -> None:
    async def main() -> None:
        async with running(
            command_tokens=(COMMAND,), command_rate=0.001, command_burst=2
        ) as gateway:
            websocket = await client(gateway, f"?token={COMMAND}")
            command = {"type": "command", "device": "node-1", "message": "ping"}
            assert (await request(websocket, command))["type"] == "command_sent"
            assert (await request(websocket, command))["type"] == "command_sent"
            error = await request(websocket, command)
            assert error["code"] == "rate_limited"
            assert "bursts of 2" in error["message"]
            assert len(gateway.commands.calls) == 2
            await subscribe(websocket, "#")
            await websocket.close()

    run(main)


# Plain HTTP, shutdown.


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=GUARD) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_healthz_and_metrics_over_plain_http() -> None:
    async def main() -> None:
        async with running() as gateway:
            websocket = await client(gateway)
            await eventually(lambda: gateway.sample("tgw_websocket_clients") == 1)
            status, content_type, body = await asyncio.to_thread(fetch, gateway.http + "/healthz")
            assert (status, content_type) == (200, "application/json")
            assert orjson.loads(body) == {"status": "ok", "clients": 1}
            status, content_type, body = await asyncio.to_thread(fetch, gateway.http + "/metrics")
            assert (status, content_type) == (200, CONTENT_TYPE)
            assert "tgw_websocket_clients 1.0" in body.decode().splitlines()
            status, _, body = await asyncio.to_thread(fetch, gateway.http + "/nothing")
            assert status == 404
            assert body.decode().count("\n") == 1
            assert "/nothing" in body.decode()
            await websocket.close()

    run(main)


def test_close_says_going_away_to_every_client() -> None:
    async def main() -> None:
        async with running() as gateway:
            first = await client(gateway)
            second = await client(gateway)
            await subscribe(second, "#")
            await gateway.close()
            for websocket in (first, second):
                with pytest.raises(ConnectionClosed) as closed:
                    await websocket.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1001
            assert gateway.sample("tgw_websocket_clients") == 0

    run(main)


def test_too_many_filters_is_a_bad_filter_error() -> None:
    async def main() -> None:
        async with running() as gateway:
            websocket = await client(gateway)
            filters = [f"node-{n}/+" for n in range(MAX_FILTERS + 1)]
            error = await request(websocket, {"type": "subscribe", "filters": filters, "id": 1})
            assert error["code"] == "bad_filter"
            assert error["id"] == 1
            assert f"expected at most {MAX_FILTERS}" in error["message"]
            reply = await request(websocket, {"type": "subscribe", "filters": ["#"]})
            assert reply == {"type": "subscribed", "filters": ["#"]}
            await websocket.close()

    run(main)


# Shutdown by a deadline, whatever the clients do.


async def lingering_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that completes the handshake by hand and reads the greeting: like the
    websocket-client library, it will not close its end after the close frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    opcode, greeting = await read_frame(reader)
    assert opcode == 0x1
    assert orjson.loads(greeting)["type"] == "hello"
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked frame from the server: its opcode and payload."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2))
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


@pytest.mark.parametrize("client_kind", ["lingering", "mute"])
def test_close_returns_by_its_deadline_whatever_clients_do(client_kind: str) -> None:
    # A lingering client reads the close frame and keeps its TCP connection open
    # (websockets would wait 10 s for it); a mute one connects and never sends its
    # handshake (websockets would wait 10 s for that).
    async def main() -> None:
        async with running() as gateway:
            behaved = await client(gateway)
            if client_kind == "lingering":
                reader, writer = await lingering_client(gateway.output.server.port)
            else:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", gateway.output.server.port
                )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            await gateway.output.close(deadline)
            assert loop.time() < deadline + 5  # not the 10 s websockets would wait
            if client_kind == "lingering":
                opcode, payload = await read_frame(reader)
                assert (opcode, payload[:2]) == (0x8, (1001).to_bytes(2))  # going away
            assert await reader.read() == b""  # then cut off
            with pytest.raises(ConnectionClosed) as closed:
                await behaved.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001
            assert gateway.output.health()["clients"] == 0
            writer.close()

    run(main)


# The output as the gateway sees it.


def test_the_factory_builds_nothing_when_websocket_is_off() -> None:
    config = GatewayConfig(websocket=WebSocketConfig(enabled=False))
    metrics = GatewayMetrics()
    context = OutputContext(
        config=config,
        metrics=metrics,
        journal=Journal(history=10),
        http=HttpEndpoints(health=lambda: (200, {}), metrics=metrics),
        schemas={},
        hello=lambda: {"type": "hello"},
        commands=FakeCommands(),
    )
    assert build(context) is None


def test_health_counts_clients_and_what_waits_for_them() -> None:
    async def main() -> None:
        async with running(queue_size=10000) as gateway:
            assert gateway.output.health() == {
                "clients": 0,
                "last_seq": 0,
                "buffered": 0,
                "dropped": 0,
            }
            websocket = await client(gateway, max_queue=1)
            await subscribe(websocket, "#")
            last = 0
            while gateway.buffered == 0:  # the client does not read
                last = gateway.publish(blob="x" * 32768)
            health = gateway.output.health()
            assert health["clients"] == 1
            assert health["last_seq"] == last
            assert health["buffered"] == gateway.buffered > 0
            await messages_until(websocket, last)
            await websocket.close()

    run(main)
