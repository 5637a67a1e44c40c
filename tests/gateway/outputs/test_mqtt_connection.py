"""The MQTT connection against a real mosquitto, and against small fake brokers.

The real broker checks what the wire says (a subscriber gets what was published, in
order, with its QoS; the will is published when the connection dies); the fakes are
asyncio servers on 127.0.0.1 that say what mosquitto cannot be made to say (nothing at
all, or a packet a publisher must not receive). Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from itertools import count

import pytest

from gateway.outputs.mqtt_codec import Will
from gateway.outputs.mqtt_connection import (
    ConnectRefusedError,
    MqttConnection,
    MqttError,
    open_connection,
)
from gateway.outputs.outbox import Entry, OutboundMessage
from tests.gateway.broker import GUARD, Mosquitto, Received, Subscriber, free_port

_ids = count(1)


class Heard:
    """What the connection's callbacks said: acknowledged entries, and wake-ups."""

    def __init__(self) -> None:
        self.acknowledged: list[Entry] = []
        self.batches = 0
        self.woken = asyncio.Event()

    def acknowledge(self, entries: list[Entry]) -> None:
        self.acknowledged += entries
        self.batches += 1
        self.woken.set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(GUARD):
                while not condition():
                    self.woken.clear()
                    await self.woken.wait()
        except TimeoutError:
            pytest.fail(f"{what}: not within {GUARD} s")


async def connect(
    port: int,
    heard: Heard,
    *,
    keepalive: int = 30,
    will: Will | None = None,
    username: str | None = None,
    password: str | None = None,
) -> MqttConnection:
    return await open_connection(
        "127.0.0.1",
        port,
        client_id=f"tgw-connection-test-{next(_ids)}",
        keepalive=keepalive,
        will=will,
        timeout=GUARD,
        acknowledged=heard.acknowledge,
        wake=heard.woken.set,
        username=username,
        password=password,
    )


def acknowledged(heard: Heard, count: int) -> bool:
    return len(heard.acknowledged) == count


def entries(topic: str, qos: int, total: int, *, retain: bool = False) -> list[Entry]:
    return [Entry(n, OutboundMessage(topic, b"%d" % n, qos, retain), 0.0) for n in range(total)]


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_windows_are_published_in_order_and_acknowledged(mosquitto: Mosquitto, qos: int) -> None:
    """Windows of 20 (mosquitto's limit at QoS 2: beyond it, it acknowledges and drops)."""
    sent = entries("tgw-test/a", qos, 250)

    async def scenario() -> None:
        heard = Heard()
        with Subscriber(mosquitto, "tgw-test/#") as sub:
            connection = await connect(mosquitto.port, heard)
            for start in range(0, len(sent), 20):
                assert connection.publish(sent[start : start + 20]) == []
                done = min(start + 20, len(sent))
                await heard.until(partial(acknowledged, heard, done), f"{done} acknowledged")
            assert len(connection) == 0
            got = await sub.wait_until_async(lambda ms: len(ms) >= 250, "250 messages")
            await connection.close()
        assert heard.acknowledged == sent
        assert got == [Received("tgw-test/a", e.message.payload, qos, False) for e in sent]
        if qos:
            assert heard.batches < 250  # acknowledgements are heard in batches

    asyncio.run(scenario())


def test_what_mqtt_cannot_carry_is_returned_and_the_rest_is_sent(mosquitto: Mosquitto) -> None:
    good, bad, last = entries("tgw-test/a", 1, 3)
    bad = bad._replace(message=OutboundMessage("tgw-test/+", b"x", 1, False))

    async def scenario() -> list[tuple[Entry, str]]:
        heard = Heard()
        connection = await connect(mosquitto.port, heard)
        refused = connection.publish([good, bad, last])
        await heard.until(lambda: len(heard.acknowledged) == 2, "two acknowledged")
        assert heard.acknowledged == [good, last]
        await connection.close()
        return refused

    assert asyncio.run(scenario()) == [
        (bad, "the topic 'tgw-test/+' has a wildcard (+ or #): only filters may")
    ]


def test_publish_and_wait_returns_once_acknowledged(mosquitto: Mosquitto) -> None:
    async def scenario() -> None:
        heard = Heard()
        with Subscriber(mosquitto, "tgw-test/#") as sub:
            connection = await connect(mosquitto.port, heard)
            async with asyncio.timeout(GUARD):
                await connection.publish_and_wait(
                    OutboundMessage("tgw-test/status", b"online", 1, True)
                )
            assert len(connection) == 0
            with pytest.raises(ValueError, match="an empty topic"):
                await connection.publish_and_wait(OutboundMessage("", b"", 1, False))
            got = await sub.wait_until_async(lambda ms: len(ms) >= 1, "the status")
            await connection.close()
        assert got == [Received("tgw-test/status", b"online", 1, False)]
        assert heard.acknowledged == []

    asyncio.run(scenario())


def test_the_will_is_published_when_the_connection_dies_not_after_close(
    mosquitto: Mosquitto,
) -> None:
    will = Will("tgw-test/will", b"offline", qos=1, retain=False)

    async def scenario() -> list[Received]:
        with Subscriber(mosquitto, "tgw-test/will") as sub:
            closed = await connect(mosquitto.port, Heard(), will=will)
            await closed.close()
            died = await connect(mosquitto.port, Heard(), will=will)
            died.abort()
            return await sub.wait_until_async(lambda ms: len(ms) >= 1, "the will")

    assert asyncio.run(scenario()) == [Received("tgw-test/will", b"offline", 1, False)]


def test_a_refused_connect_says_why() -> None:
    async def scenario() -> None:
        with Mosquitto(anonymous=False) as broker, pytest.raises(ConnectRefusedError) as refused:
            await connect(broker.port, Heard(), username="node", password="x")
        assert str(refused.value) == "refused by the broker: not authorized"
        assert refused.value.code == 5

    asyncio.run(scenario())


def test_no_broker_is_an_mqtt_error_saying_so() -> None:
    async def scenario() -> None:
        with pytest.raises(MqttError, match=r"^connection refused$"):
            await connect(free_port(), Heard())

    asyncio.run(scenario())


def test_a_lost_connection_wakes_the_publisher_and_fails_what_waits() -> None:
    async def scenario() -> None:
        heard = Heard()
        with Mosquitto() as broker:
            connection = await connect(broker.port, heard)
            broker.pause()
            connection.publish(entries("tgw-test/a", 1, 5))
            status = asyncio.create_task(
                connection.publish_and_wait(OutboundMessage("tgw-test/s", b"on", 1, False))
            )
            await asyncio.sleep(0)
            assert len(connection) == 6
            broker.kill()
            await heard.until(lambda: heard.woken.is_set() and _lost(connection), "the loss")
            with pytest.raises(MqttError) as lost:  # "connection reset by peer", say
                await status
            assert str(lost.value)
            with pytest.raises(MqttError):
                connection.publish(entries("tgw-test/a", 1, 1))
            assert connection.forget() == 5
            assert len(connection) == 0
            assert heard.acknowledged == []
            await connection.close()

    asyncio.run(scenario())


def _lost(connection: MqttConnection) -> bool:
    try:
        connection.check()
    except MqttError:
        return True
    return False


def test_a_full_socket_pauses_qos_0_until_the_broker_reads_again() -> None:
    """The broker freezes: QoS 0 messages are acknowledged once the socket takes them,
    so the connection says ``paused`` when it does not, and wakes the publisher when it
    does again."""
    message = OutboundMessage("tgw-test/a", b"x" * 1000, 0, False)

    async def scenario() -> None:
        heard = Heard()
        with Mosquitto() as broker:
            connection = await connect(broker.port, heard)
            broker.pause()
            try:
                sent = 0
                while not connection.paused:
                    assert sent < 100_000, "the socket never filled"
                    connection.publish([Entry(sent, message, 0.0)])
                    sent += 1
                assert len(heard.acknowledged) == sent
                heard.woken.clear()
            finally:
                broker.resume()
            await heard.until(lambda: not connection.paused, "writable again")
            await connection.close()

    asyncio.run(scenario())


# -- fake brokers: silence, a protocol error ----------------------------------------------


Broker = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake_broker(handle: Broker) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def answering(*, pong: bool, answer: bytes = b"") -> tuple[Broker, list[bytes]]:
    """A broker that accepts the connection, answers PINGREQ (``pong``) or not, and
    sends ``answer`` after the first packet that follows CONNECT."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readexactly(2))  # CONNECT's fixed header
        received.append(await reader.readexactly(received[0][1]))
        writer.write(b"\x20\x02\x00\x00")
        while data := await reader.read(4096):
            received.append(data)
            writer.write(answer)
            if pong and data == b"\xc0\x00":
                writer.write(b"\xd0\x00")

    return handle, received


def test_an_idle_connection_pings_and_lives_while_the_broker_answers() -> None:
    async def scenario() -> None:
        handle, received = answering(pong=True)
        async with fake_broker(handle) as port:
            heard = Heard()
            connection = await connect(port, heard, keepalive=1)
            async with asyncio.timeout(GUARD):
                while received.count(b"\xc0\x00") < 3:
                    await asyncio.sleep(0.05)
            connection.check()
            await connection.close()
        assert received[-1] == b"\xe0\x00"  # DISCONNECT

    asyncio.run(scenario())


def test_a_broker_that_does_not_answer_within_the_keepalive_is_lost() -> None:
    async def scenario() -> None:
        handle, received = answering(pong=False)
        async with fake_broker(handle) as port:
            heard = Heard()
            connection = await connect(port, heard, keepalive=1)
            await heard.until(lambda: _lost(connection), "the loss")
            with pytest.raises(MqttError, match=r"^no answer from the broker within 1 s$"):
                connection.check()
        assert b"\xc0\x00" in received

    asyncio.run(scenario())


def test_a_broker_that_never_says_connack_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass

    async def scenario() -> None:
        async with fake_broker(silent) as port:
            with pytest.raises(MqttError, match=r"^no answer from the broker within 0\.2 s$"):
                await open_connection(
                    "127.0.0.1",
                    port,
                    client_id="tgw-silent",
                    keepalive=30,
                    will=None,
                    timeout=0.2,
                    acknowledged=Heard().acknowledge,
                    wake=lambda: None,
                )

    asyncio.run(scenario())


def test_a_packet_a_publisher_cannot_receive_ends_the_connection() -> None:
    publish = bytes.fromhex("30 07 00 03 61 2f 62 68 69")

    async def scenario() -> None:
        handle, _ = answering(pong=True, answer=publish)
        async with fake_broker(handle) as port:
            heard = Heard()
            connection = await connect(port, heard)
            connection.publish(entries("tgw-test/a", 0, 1))
            await heard.until(lambda: _lost(connection), "the protocol error")
            with pytest.raises(MqttError, match=r"^protocol error: a PUBLISH packet"):
                connection.check()
            await connection.close()

    asyncio.run(scenario())
