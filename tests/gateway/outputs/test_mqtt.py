"""The MQTT publisher against a real mosquitto, and the in-memory outbox.

No mocks: every publisher test runs ``mosquitto`` (tests/gateway/broker.py; the
``mosquitto`` fixture comes through tests/conftest.py) and checks what a real
subscriber receives. The tests wait for behaviour (a message arrives, the
outbox empties); timeouts are only hang guards.

Two tests restart the broker while a subscriber must not miss anything: they use a
broker with persistence and a subscriber with a persistent session, so that the
broker keeps the subscriber's messages whichever of the two reconnects first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from itertools import count
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from gateway.config import GatewayConfig, MqttConfig, TcpSourceConfig
from gateway.outputs.mqtt import MqttPublisher, build
from gateway.outputs.outbox import MemoryOutbox
from gateway.runtime.http import HttpEndpoints
from gateway.runtime.journal import Journal
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import Output, OutputContext
from gateway.runtime.status import DeviceStatus
from protocol.errors import ConfigError
from protocol.schema import Schema, load_schema
from tests.gateway.broker import (
    GUARD,
    POLL,
    Mosquitto,
    Received,
    Subscriber,
    free_port,
)

PREFIX = "tgw-test"
_ids = count()


def config(port: int, **changes: object) -> MqttConfig:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "client_id": f"tgw-test-{next(_ids)}",
        "topic_prefix": PREFIX,
        "keepalive": 10,
        **changes,
    }
    return MqttConfig.model_validate(values)


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    """A metric's value; 0 for a labelled counter never incremented."""
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def published(metrics: GatewayMetrics) -> float:
    return sample(metrics, "tgw_mqtt_published_total")


def queue_depth(metrics: GatewayMetrics) -> float:
    return sample(metrics, "tgw_mqtt_queue_depth")


def dropped(metrics: GatewayMetrics) -> float:
    return sample(metrics, "tgw_mqtt_dropped_total", reason="queue_full")


def status(device: str, online: bool) -> DeviceStatus:
    return DeviceStatus(device, online, "connected" if online else "source stopped", time.time())


def connected(publisher: MqttPublisher) -> bool:
    return bool(publisher.health()["connected"])


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds; fail after the hang guard."""
    try:
        async with asyncio.timeout(GUARD):
            while not condition():
                await asyncio.sleep(POLL)
    except TimeoutError:
        pytest.fail(f"{what}: not within {GUARD} s")


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[asyncio.Task[None]]:
    """``publisher.run()`` as a task, cancelled at the end (as the gateway does)."""
    task = asyncio.create_task(publisher.run(), name="mqtt-publisher")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def data(messages: list[Received]) -> list[Received]:
    """The messages that are not statuses."""
    return [m for m in messages if not m.topic.endswith("/status")]


def payloads(messages: list[Received]) -> list[bytes]:
    return [m.payload for m in messages]


def first_occurrences(items: list[bytes]) -> tuple[list[bytes], int]:
    """``items`` without repeats, in order of first arrival, and the number of repeats."""
    seen: dict[bytes, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen), len(items) - len(seen)


def numbered(start: int, stop: int) -> list[bytes]:
    return [b'{"n": %d, "raw": "\x00\xff"}' % n for n in range(start, stop)]


# -- publishing -------------------------------------------------------------------------


MESSAGES = [
    ("node-1/environment", b'{"temperature": 21.5}'),
    ("node-1/power", b"\x00\x01\x02\xff binary is fine"),
    ("node-2/environment", b""),
    *(("node-1/environment", b'{"n": %d}' % n) for n in range(20)),
    ("node-2/unknown", b'{"cmd": 99}'),
]


@pytest.mark.parametrize(("qos", "retain"), [(0, False), (1, False), (2, True)])
def test_messages_arrive_in_order_with_the_configured_qos_and_retain(
    mosquitto: Mosquitto,
    qos: int,
    retain: bool,
) -> None:
    metrics = GatewayMetrics()
    publisher = MqttPublisher(config(mosquitto.port, qos=qos, retain=retain), metrics)
    expected = [(f"{PREFIX}/{topic}", payload) for topic, payload in MESSAGES]

    async def scenario() -> None:
        with Subscriber(mosquitto, f"{PREFIX}/#") as live:
            async with running(publisher):
                publisher.device_status(status("node-1", True))
                for topic, payload in MESSAGES:
                    publisher.publish_message(topic, payload)
                got = await live.wait_until_async(
                    lambda ms: len(data(ms)) >= len(expected), "every message"
                )
                assert [(m.topic, m.payload) for m in data(got)] == expected
                assert {(m.qos, m.retain) for m in data(got)} == {(qos, False)}
                await until(lambda: queue_depth(metrics) == 0, "the outbox empty")
                assert published(metrics) == len(expected)
                assert queue_depth(metrics) == 0

                # What a subscriber arriving now gets as retained: everything before
                # the marker, which is published after it subscribed.
                with Subscriber(mosquitto, f"{PREFIX}/#") as late:
                    publisher.publish_message("node-1/marker", b"end")
                    got = await late.wait_until_async(
                        lambda ms: any(m.payload == b"end" for m in ms), "the marker"
                    )
        retained = got[: payloads(got).index(b"end")]
        assert all(m.retain for m in retained)
        statuses = {m.topic: m.payload for m in retained if m.topic.endswith("/status")}
        assert statuses == {
            f"{PREFIX}/gateway/status": b"online",
            f"{PREFIX}/node-1/status": b"online",
        }
        # An empty retained payload deletes the retained message (MQTT 3.3.1.3).
        last = {topic: payload for topic, payload in expected if payload}
        assert {m.topic: m.payload for m in data(retained)} == (last if retain else {})

    asyncio.run(scenario())


def test_device_status_is_retained_and_only_the_latest_counts(
    mosquitto: Mosquitto,
) -> None:
    publisher = MqttPublisher(config(mosquitto.port), GatewayMetrics())

    async def scenario() -> None:
        publisher.device_status(status("node-1", True))  # before the connection
        publisher.device_status(status("node-2", True))
        publisher.device_status(status("node-2", False))
        async with running(publisher):
            with Subscriber(mosquitto, f"{PREFIX}/+/status") as live:
                await live.wait_until_async(
                    lambda ms: len(ms) >= 3, "three statuses (gateway, node-1, node-2)"
                )
                publisher.device_status(status("node-1", False))
                publisher.device_status(status("node-3", True))
                got = await live.wait_until_async(
                    lambda ms: any(m.topic.endswith("node-3/status") for m in ms), "node-3"
                )
            assert connected(publisher)
        assert [(m.topic, m.payload) for m in got] == [
            (f"{PREFIX}/gateway/status", b"online"),
            (f"{PREFIX}/node-1/status", b"online"),
            (f"{PREFIX}/node-2/status", b"offline"),
            (f"{PREFIX}/node-1/status", b"offline"),
            (f"{PREFIX}/node-3/status", b"online"),
        ]

    asyncio.run(scenario())


# -- the gateway's status: last will, close, cancel ------------------------------------------


WILL_SCRIPT = """
import asyncio, sys
from gateway.config import MqttConfig
from gateway.runtime.metrics import GatewayMetrics
from gateway.outputs.mqtt import MqttPublisher

config = MqttConfig(port=int(sys.argv[1]), topic_prefix=sys.argv[2], client_id="tgw-will")
asyncio.run(MqttPublisher(config, GatewayMetrics()).run())
"""


def test_last_will_says_offline_when_the_gateway_dies(mosquitto: Mosquitto) -> None:
    topic = f"{PREFIX}/gateway/status"
    gateway = subprocess.Popen(
        [sys.executable, "-c", WILL_SCRIPT, str(mosquitto.port), PREFIX],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with Subscriber(mosquitto, topic) as watcher:
            watcher.wait_until(
                lambda ms: b"online" in payloads(ms) or gateway.poll() is not None,
                "the gateway online",
            )
            assert gateway.poll() is None, gateway.communicate()[1].decode()
            gateway.send_signal(signal.SIGKILL)
            gateway.wait()
            got = watcher.wait_until(lambda ms: payloads(ms)[-1:] == [b"offline"], "the will")
        assert payloads(got) == [b"online", b"offline"]
    finally:
        if gateway.poll() is None:
            gateway.kill()
        gateway.communicate()
    with Subscriber(mosquitto, topic) as late:
        got = late.wait_until(lambda ms: len(ms) >= 1, "the retained status")
    assert got == [Received(topic, b"offline", 1, True)]


def test_close_says_offline_and_flushes_the_outbox(mosquitto: Mosquitto) -> None:
    metrics = GatewayMetrics()
    publisher = MqttPublisher(config(mosquitto.port), metrics)
    offered = numbered(0, 50)

    async def scenario() -> None:
        with Subscriber(mosquitto, f"{PREFIX}/+/environment") as live:
            async with running(publisher) as task:
                publisher.device_status(status("node-1", True))
                publisher.device_status(status("node-2", True))
                await until(lambda: connected(publisher), "connected")
                for payload in offered:
                    publisher.publish_message("node-1/environment", payload)
                await publisher.close(asyncio.get_running_loop().time() + GUARD)
                async with asyncio.timeout(GUARD):
                    await task  # run() returns after close()
                assert not connected(publisher)
                assert dict(publisher.health()) == {
                    "connected": False,
                    "queue_depth": 0,
                    "inflight": 0,
                    "outbox_bytes": 0,
                    "oldest_age": 0.0,
                    "published": 50,
                    "dropped": 0,
                    "last_error": None,
                }
            got = await live.wait_until_async(lambda ms: len(ms) >= 50, "50 messages")
        assert payloads(got) == offered
        assert published(metrics) == 50
        assert sample(metrics, "tgw_mqtt_connected") == 0

    asyncio.run(scenario())
    with Subscriber(mosquitto, f"{PREFIX}/+/status") as late:
        got = late.wait_until(lambda ms: len(ms) >= 3, "three retained statuses")
    assert {m.topic: (m.payload, m.retain) for m in got} == {
        f"{PREFIX}/gateway/status": (b"offline", True),
        f"{PREFIX}/node-1/status": (b"offline", True),
        f"{PREFIX}/node-2/status": (b"offline", True),
    }


def test_cancel_without_close_still_says_offline(mosquitto: Mosquitto) -> None:
    publisher = MqttPublisher(config(mosquitto.port), GatewayMetrics())

    async def scenario() -> None:
        with Subscriber(mosquitto, f"{PREFIX}/+/status") as live:
            async with running(publisher):
                publisher.device_status(status("node-1", True))
                await live.wait_until_async(lambda ms: len(ms) >= 2, "both statuses online")
            assert not connected(publisher)

    asyncio.run(scenario())
    with Subscriber(mosquitto, f"{PREFIX}/+/status") as late:
        got = late.wait_until(lambda ms: len(ms) >= 2, "two retained statuses")
    assert {m.topic: m.payload for m in got} == {
        f"{PREFIX}/gateway/status": b"offline",
        f"{PREFIX}/node-1/status": b"offline",
    }


def test_close_without_a_broker_returns(caplog: pytest.LogCaptureFixture) -> None:
    publisher = MqttPublisher(config(free_port()), GatewayMetrics())

    async def scenario() -> None:
        async with running(publisher) as task:
            publisher.publish_message("node-1/environment", b"{}")
            await until(lambda: publisher.health()["last_error"] is not None, "an attempt")
            await publisher.close(asyncio.get_running_loop().time() + GUARD)
            async with asyncio.timeout(GUARD):
                await task
        assert publisher.health()["queue_depth"] == 1

    asyncio.run(scenario())
    assert "mqtt closed with 1 messages not published" in caplog.text


def test_a_refused_connection_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with Mosquitto(anonymous=False) as broker:
        publisher = MqttPublisher(
            config(broker.port, username="node", password="x"), GatewayMetrics()
        )

        async def scenario() -> None:
            async with running(publisher):
                await until(lambda: publisher.health()["last_error"] is not None, "an attempt")
                assert not connected(publisher)

        asyncio.run(scenario())
    assert publisher.health()["last_error"] == "refused by the broker: not authorized"
    assert f"cannot connect to mqtt 127.0.0.1:{broker.port}: refused by the broker" in caplog.text


# -- outages ----------------------------------------------------------------------------


def test_broker_absent_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.outputs.mqtt")
    with Mosquitto(persistence=True) as broker:
        topic = f"{PREFIX}/node-1/environment"
        with Subscriber(broker, topic, client_id="tgw-test-absent", persistent=True) as sub:
            broker.stop()  # the broker keeps the subscriber's session
            metrics = GatewayMetrics()
            publisher = MqttPublisher(config(broker.port), metrics)
            offered = numbered(0, 30)

            async def scenario() -> None:
                async with running(publisher):
                    for payload in offered:
                        publisher.publish_message("node-1/environment", payload)
                    assert queue_depth(metrics) == 30
                    await until(
                        lambda: sample(metrics, "tgw_mqtt_reconnects_total") >= 2,
                        "two attempts after the first",
                    )
                    assert not connected(publisher)
                    assert sample(metrics, "tgw_mqtt_connected") == 0
                    assert publisher.health()["last_error"] == "connection refused"
                    assert queue_depth(metrics) == 30
                    assert published(metrics) == 0

                    broker.start()
                    await until(lambda: queue_depth(metrics) == 0, "the outbox drained")
                    assert connected(publisher)
                    got = await sub.wait_until_async(lambda ms: len(ms) >= 30, "30 messages")
                    assert payloads(got) == offered
                    assert published(metrics) == 30

            asyncio.run(scenario())

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    address = f"127.0.0.1:{broker.port}"
    assert warnings == [f"cannot connect to mqtt {address}: connection refused; retrying"]
    assert f"mqtt {address} still unreachable: connection refused" in caplog.text
    assert f"connected to mqtt {address}" in caplog.text


def test_broker_restart_mid_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.outputs.mqtt")
    with Mosquitto(persistence=True) as broker:
        topic = f"{PREFIX}/node-1/environment"
        with Subscriber(broker, topic, client_id="tgw-test-restart", persistent=True) as sub:
            metrics = GatewayMetrics()
            publisher = MqttPublisher(config(broker.port), metrics)
            offered = numbered(0, 300)

            async def scenario() -> None:
                async with running(publisher):
                    await until(lambda: connected(publisher), "connected")
                    for payload in offered[:150]:
                        publisher.publish_message("node-1/environment", payload)
                    await until(lambda: published(metrics) >= 20, "20 published")
                    broker.stop()  # with messages in flight and queued
                    await until(lambda: not connected(publisher), "the loss noticed")
                    for payload in offered[150:]:
                        publisher.publish_message("node-1/environment", payload)
                    assert published(metrics) + queue_depth(metrics) == 300

                    broker.start()
                    await until(lambda: queue_depth(metrics) == 0, "the outbox drained")
                    got = await sub.wait_until_async(
                        lambda ms: set(payloads(ms)) >= set(offered), "all 300 messages"
                    )
                    unique, repeats = first_occurrences(payloads(got))
                    assert unique == offered
                    # QoS 1: a message whose PUBACK was lost is sent again.
                    assert repeats >= 0
                    assert published(metrics) + queue_depth(metrics) + dropped(metrics) == 300
                    assert published(metrics) == 300
                    assert sample(metrics, "tgw_mqtt_reconnects_total") >= 1
                    assert connected(publisher)

            asyncio.run(scenario())

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"mqtt connection to 127.0.0.1:{broker.port} lost: ")
    connects = [r for r in caplog.records if r.getMessage().startswith("connected to mqtt")]
    assert len(connects) == 2


def inflight(metrics: GatewayMetrics) -> float:
    return sample(metrics, "tgw_mqtt_inflight")


def test_a_message_mqtt_cannot_carry_is_dropped_counted_and_the_rest_go_on(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = GatewayMetrics()
    publisher = MqttPublisher(config(mosquitto.port), metrics)

    async def scenario() -> None:
        with Subscriber(mosquitto, f"{PREFIX}/#") as live:
            async with running(publisher):
                publisher.publish_message("node-1/first", b"1")
                publisher.publish_message("node-1/+", b"a wildcard in a topic")
                publisher.publish_message("node-1/last", b"2")
                got = await live.wait_until_async(lambda ms: len(data(ms)) >= 2, "two messages")
                await until(lambda: queue_depth(metrics) == 0, "the outbox empty")
        assert payloads(data(got)) == [b"1", b"2"]
        assert sample(metrics, "tgw_mqtt_dropped_total", reason="invalid") == 1
        assert published(metrics) == 2

    asyncio.run(scenario())
    assert f"mqtt cannot publish to '{PREFIX}/node-1/+'" in caplog.text


def test_a_window_of_publishes_is_in_flight_and_no_more() -> None:
    """The broker freezes (SIGSTOP) with 30 messages queued: exactly ``max_inflight`` of
    them are sent and wait for their acknowledgement; when it thaws, all 30 arrive in
    order, each once."""
    with Mosquitto() as broker:
        topic = f"{PREFIX}/node-1/environment"
        with Subscriber(broker, topic) as sub:
            metrics = GatewayMetrics()
            publisher = MqttPublisher(config(broker.port, max_inflight=5), metrics)
            offered = numbered(0, 30)

            async def scenario() -> None:
                async with running(publisher):
                    await until(lambda: connected(publisher), "connected")
                    broker.pause()
                    try:
                        for payload in offered:
                            publisher.publish_message("node-1/environment", payload)
                        await until(lambda: inflight(metrics) == 5, "a full window")
                        assert queue_depth(metrics) == 30  # in flight is still kept
                        assert published(metrics) == 0
                    finally:
                        broker.resume()
                    await until(lambda: published(metrics) == 30, "all acknowledged")
                    assert (inflight(metrics), queue_depth(metrics)) == (0, 0)
                    got = await sub.wait_until_async(lambda ms: len(ms) >= 30, "30 messages")
                    assert payloads(got) == offered

            asyncio.run(scenario())


def test_what_was_in_flight_when_the_broker_died_goes_again_in_order() -> None:
    """The broker freezes with a window in flight and dies (SIGKILL): nothing it held
    was acknowledged, so a new broker on the same port gets every message, in order;
    the publishes cut short are counted as failures."""
    broker = Mosquitto()
    broker.start()
    successor = Mosquitto(port=broker.port)
    metrics = GatewayMetrics()
    publisher = MqttPublisher(
        config(broker.port, max_inflight=4, reconnect_initial=0.05, reconnect_max=0.2), metrics
    )
    offered = numbered(0, 12)

    async def scenario() -> None:
        async with running(publisher):
            await until(lambda: connected(publisher), "connected")
            broker.pause()
            for payload in offered:
                publisher.publish_message("node-1/environment", payload)
            await until(lambda: inflight(metrics) == 4, "a full window")
            broker.kill()
            successor.start()
            with Subscriber(successor, f"{PREFIX}/node-1/environment") as sub:
                await until(lambda: published(metrics) == 12, "all acknowledged")
                got = await sub.wait_until_async(lambda ms: len(ms) >= 12, "12 messages")
            assert payloads(got) == offered
            assert sample(metrics, "tgw_mqtt_publish_failures_total") >= 4

    try:
        asyncio.run(scenario())
    finally:
        broker.close()
        successor.close()


def test_every_device_of_the_gateway_has_a_status_from_the_first_connect(
    mosquitto: Mosquitto,
) -> None:
    """A device that has not come online (yet) is ``offline`` from the first connect, so
    the retained ``online`` that a gateway killed outright left behind does not survive."""
    stale = f"{PREFIX}/node-9/status"
    mqtt_publish.single(  # what a gateway that died with node-9 online leaves
        stale, b"online", qos=1, retain=True, hostname=mosquitto.host, port=mosquitto.port
    )
    publisher = MqttPublisher(config(mosquitto.port), GatewayMetrics(), devices=["node-9"])

    async def next_run() -> None:
        async with running(publisher):
            await until(lambda: connected(publisher), "connected")
            await publisher.close(asyncio.get_running_loop().time() + GUARD)

    with Subscriber(mosquitto, stale) as watcher:
        assert payloads(watcher.wait_until(lambda ms: len(ms) >= 1, "the stale status")) == [
            b"online"
        ]
        asyncio.run(next_run())
        got = watcher.wait_until(lambda ms: len(ms) >= 2, "the status of this run")
    assert [(m.payload, m.retain) for m in got] == [(b"online", True), (b"offline", False)]
    with Subscriber(mosquitto, stale) as late:
        got = late.wait_until(lambda ms: len(ms) >= 1, "the retained status")
    assert [(m.payload, m.retain) for m in got] == [(b"offline", True)]


def test_statuses_are_published_again_after_a_reconnect(
    mosquitto: Mosquitto,
) -> None:
    publisher = MqttPublisher(config(mosquitto.port), GatewayMetrics())
    expected = {f"{PREFIX}/gateway/status": b"online", f"{PREFIX}/node-1/status": b"online"}

    def statuses(messages: list[Received]) -> dict[str, bytes]:
        return {m.topic: m.payload for m in messages}

    async def scenario() -> None:
        async with running(publisher):
            publisher.device_status(status("node-1", True))
            with Subscriber(mosquitto, f"{PREFIX}/+/status") as sub:
                await sub.wait_until_async(lambda ms: statuses(ms) == expected, "online")
            mosquitto.stop()  # without persistence: the retained statuses are gone
            await until(lambda: not connected(publisher), "the loss noticed")
            mosquitto.start()
            with Subscriber(mosquitto, f"{PREFIX}/+/status") as sub:
                await sub.wait_until_async(lambda ms: statuses(ms) == expected, "online again")
            with Subscriber(mosquitto, f"{PREFIX}/+/status") as late:
                got = await late.wait_until_async(lambda ms: len(ms) >= 2, "retained")
            assert {(m.topic, m.payload, m.retain) for m in got} == {
                (topic, payload, True) for topic, payload in expected.items()
            }

    asyncio.run(scenario())


def test_full_outbox_drops_the_oldest_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.outputs.mqtt")
    broker = Mosquitto()  # not started yet
    metrics = GatewayMetrics()
    outbox = MemoryOutbox(5)
    publisher = MqttPublisher(config(broker.port, queue_size=5), metrics, outbox=outbox)
    offered = numbered(0, 12)

    async def scenario() -> None:
        async with running(publisher):
            for payload in offered:
                publisher.publish_message("node-1/environment", payload)
            assert dropped(metrics) == 7
            assert queue_depth(metrics) == 5
            assert publisher.health()["dropped"] == 7
            [head] = outbox.take(1)
            assert head.message.payload == offered[7]
            outbox.rewind()

            broker.start()
            await until(lambda: queue_depth(metrics) == 0, "the outbox drained")
            assert published(metrics) == 5
            assert published(metrics) + queue_depth(metrics) + dropped(metrics) == 12

    try:
        asyncio.run(scenario())
    finally:
        broker.close()
    full = [r for r in caplog.records if "outbox full" in r.getMessage()]
    assert [r.levelno for r in full] == [logging.WARNING]
    assert "7 messages were dropped while full" in caplog.text


# -- the output: its factory, room for more, close by a deadline -------------------------


class NoCommands:
    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        raise AssertionError("no commands here")


def context(
    schema: Schema,
    *devices: str,
    enabled: bool = True,
    path: Path | None = Path("gw.toml"),
    state_dir: Path | None = None,
) -> OutputContext:
    metrics = GatewayMetrics()
    sources = tuple(TcpSourceConfig(device=device, host="h", port=1) for device in devices)
    config = GatewayConfig(
        sources=sources,
        mqtt=MqttConfig(enabled=enabled),
        state_dir=None if state_dir is None else str(state_dir),
    )
    if path is not None:
        config.with_source(str(path))
    return OutputContext(
        config=config,
        metrics=metrics,
        journal=Journal(history=0),
        http=HttpEndpoints(health=lambda: (200, {}), metrics=metrics),
        schemas=dict.fromkeys(devices, schema),
        hello=dict,
        commands=NoCommands(),
    )


def test_build_makes_the_output_when_enabled(default_schema: Schema) -> None:
    assert build(context(default_schema, "node-1", enabled=False)) is None
    output: Output | None = build(context(default_schema, "node-1"))  # mypy: an Output
    assert output is not None
    assert output.name == "mqtt"
    assert dict(output.health())["connected"] is False


def test_build_refuses_a_device_called_gateway(default_schema: Schema) -> None:
    with pytest.raises(ConfigError) as error:
        build(context(default_schema, "node-1", "gateway"))
    assert (error.value.source, error.value.key_path) == ("gw.toml", "sources[1].device")
    assert "'gateway' is reserved" in error.value.problem
    assert "<prefix>/gateway/status" in error.value.problem
    assert build(context(default_schema, "gateway", enabled=False)) is None  # MQTT's rule


def test_build_refuses_a_message_called_status(tmp_path: Path) -> None:
    catalog = tmp_path / "clash.toml"
    catalog.write_text('name = "clash"\n[[messages]]\ncmd = 1\nname = "status"\n', "utf-8")
    with pytest.raises(ConfigError) as error:
        build(context(load_schema("default", str(catalog)), "a"))
    assert (error.value.source, error.value.key_path) == ("gw.toml", "sources[0].catalog")
    assert error.value.problem == (
        "catalog 'clash' has a message called 'status', whose topic would be the device's "
        "online status (<prefix>/a/status); rename the message"
    )


def test_wait_for_room_waits_from_half_full_until_a_quarter() -> None:
    broker = Mosquitto()  # not started yet
    metrics = GatewayMetrics()
    publisher = MqttPublisher(config(broker.port, queue_size=8), metrics)

    async def scenario() -> None:
        async with running(publisher):
            for payload in numbered(0, 4):  # half full: room
                publisher.publish_message("node-1/environment", payload)
            async with asyncio.timeout(GUARD):
                await publisher.wait_for_room()
            publisher.publish_message("node-1/environment", b"one more")
            waiting = asyncio.create_task(publisher.wait_for_room())
            for _ in range(20):
                await asyncio.sleep(POLL / 10)
            assert not waiting.done()
            broker.start()
            async with asyncio.timeout(GUARD):
                await waiting
            assert publisher.health()["queue_depth"] <= 2

    try:
        asyncio.run(scenario())
    finally:
        broker.close()


async def stuck_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept the connection (CONNACK), then acknowledge nothing, never hang up."""
    await reader.read(2)
    writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
    while await reader.read(4096):
        pass


def test_close_and_cancel_end_by_the_deadline_whatever_the_broker_does() -> None:
    async def scenario() -> float:
        server = await asyncio.start_server(stuck_broker, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            publisher = MqttPublisher(config(port), GatewayMetrics())
            loop = asyncio.get_running_loop()
            async with running(publisher):
                await until(lambda: connected(publisher), "connected")
                publisher.device_status(status("node-1", True))
                publisher.publish_message("node-1/environment", b"{}")
                started = loop.time()
                await publisher.close(started + 1.0)
            return loop.time() - started

    assert asyncio.run(scenario()) < 1.5  # close() and then the cancel of run()
