"""The whole gateway, end to end: fwsim on a PTY and on TCP, `tgw run` as its own
process, a real mosquitto, real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.fwsim.helpers import simulator
from tests.gateway.broker import Mosquitto, Subscriber, free_port

TGW = Path(sys.executable).parent / "tgw"
GUARD = 30.0
"""Seconds after which a wait is a hang: only a guard, never a measure."""
FAST = ["--interval", "motion=0.02", "--interval", "heartbeat=0.1", "--interval", "environment=0.1"]
ENVELOPE_KEYS = {"type", "seq", "device", "message", "cmd", "time", "fields"}


@contextmanager
def gateway(config: Path) -> Iterator[subprocess.Popen[str]]:
    """Run `tgw run -c config` until the end of the block, then SIGTERM it."""
    process = subprocess.Popen(
        [str(TGW), "run", "-c", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=GUARD)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            assert process.stderr is not None
            process.stderr.close()


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def wait_healthy(port: int) -> dict[str, Any]:
    deadline = time.monotonic() + GUARD
    while time.monotonic() < deadline:
        status, body = http_get(port, "/healthz")
        if status == 200:
            health: dict[str, Any] = json.loads(body)
            return health
        time.sleep(0.05)
    raise AssertionError(f"/healthz on {port} never said 200")


def metric(port: int, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    _, body = http_get(port, "/metrics")
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, label_text = sample.partition("{")
        if sample_name == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


def write_config(path: Path, ws_port: int, mqtt_port: int, sources: str) -> Path:
    path.write_text(
        f"""
{sources}

[websocket]
host = "127.0.0.1"
port = {ws_port}

[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_port}
topic_prefix = "tgw"
qos = 1
""",
        encoding="utf-8",
    )
    return path


async def receive_until(
    client: ClientConnection, predicate: Any, what: str
) -> list[dict[str, Any]]:
    """Receive JSON messages until ``predicate(all so far)`` holds."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(GUARD):
        while not predicate(received):
            try:
                received.append(json.loads(await client.recv()))
            except ConnectionClosed:
                raise AssertionError(f"closed before {what}: {received[-5:]}") from None
    return received


def test_frames_reach_websocket_and_mqtt_subscribers(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link = tmp_path / "ttyNODE"
    ws_port = free_port()
    with (
        simulator("--link", link, *FAST) as (_, _),
        simulator("--tcp", "127.0.0.1:0", "--seed", "2", *FAST) as (_, tcp_where),
        Subscriber(mosquitto, "tgw/#") as mqtt_subscriber,
    ):
        tcp_host, _, tcp_port = tcp_where.rpartition(":")
        sources = f"""
[[sources]]
type = "serial"
device = "pty-node"
path = "{link}"

[[sources]]
type = "tcp"
device = "tcp-node"
host = "{tcp_host}"
port = {tcp_port}
include_raw = true
"""
        config = write_config(tmp_path / "gateway.toml", ws_port, mosquitto.port, sources)
        with gateway(config):
            health = wait_healthy(ws_port)
            assert {s["device"] for s in health["sources"]} == {"pty-node", "tcp-node"}

            async def dashboards() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
                uri = f"ws://127.0.0.1:{ws_port}"
                async with connect(uri) as narrow, connect(uri) as broad:
                    hello = json.loads(await narrow.recv())
                    assert hello["type"] == "hello"
                    assert {d["device"] for d in hello["devices"]} == {"pty-node", "tcp-node"}
                    assert "environment" in {m["message"] for m in hello["catalogs"]["default"]}
                    await broad.recv()
                    await narrow.send(json.dumps(
                        {"type": "subscribe", "filters": ["pty-node/environment", "tcp-node/+"]}
                    ))  # fmt: skip
                    await broad.send(json.dumps({"type": "subscribe", "filters": ["#"]}))

                    def enough(got: list[dict[str, Any]]) -> bool:
                        devices = {(m.get("device"), m.get("message")) for m in got}
                        return ("pty-node", "environment") in devices and any(
                            device == "tcp-node" for device, _ in devices
                        )

                    narrow_got = await receive_until(narrow, enough, "both devices")
                    broad_got = await receive_until(broad, lambda got: len(got) > 50, "50 messages")
                return narrow_got, broad_got

            narrow_got, broad_got = asyncio.run(dashboards())
        messages = [m for m in narrow_got if m["type"] == "message"]
        assert all(
            m["device"] == "tcp-node" or m["message"] == "environment" for m in messages
        )  # the filters are honoured
        for message in messages:
            assert set(message) >= ENVELOPE_KEYS
            assert ("raw" in message) == (message["device"] == "tcp-node")
        seqs = [m["seq"] for m in broad_got if m["type"] == "message"]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        got = mqtt_subscriber.wait_until(
            lambda ms: {m.topic for m in ms} >= {
                "tgw/pty-node/motion", "tgw/tcp-node/environment", "tgw/pty-node/status",
                "tgw/gateway/status",
            },
            "messages of both devices and the statuses",
        )  # fmt: skip
        envelope = json.loads(next(m.payload for m in got if m.topic == "tgw/pty-node/motion"))
        assert set(envelope) >= ENVELOPE_KEYS
        assert envelope["device"] == "pty-node"
        assert envelope["message"] == "motion"
        assert len(envelope["fields"]["accel"]) == 3
        statuses = [m.payload for m in got if m.topic == "tgw/pty-node/status"]
        assert b"online" in statuses
        # the gateway was stopped (SIGTERM) when its block ended: the goodbye
        final = mqtt_subscriber.wait_until(
            lambda ms: (
                [m.payload for m in ms if m.topic == "tgw/gateway/status"][-1:] == [b"offline"]
            ),
            "the gateway's offline status",
        )
        assert [m.payload for m in final if m.topic == "tgw/pty-node/status"][-1] == b"offline"


def test_sigterm_closes_websocket_clients_with_going_away(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    link = tmp_path / "ttyNODE"
    ws_port = free_port()
    sources = f'[[sources]]\ntype = "serial"\ndevice = "node"\npath = "{link}"\n'
    config = write_config(tmp_path / "gateway.toml", ws_port, mosquitto.port, sources)
    with simulator("--link", link, *FAST), gateway(config) as process:
        wait_healthy(ws_port)

        async def watch() -> int | None:
            async with connect(f"ws://127.0.0.1:{ws_port}") as client:
                await client.recv()
                process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(GUARD):
                        while True:
                            await client.recv()
                except ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd else None
            return None

        assert asyncio.run(watch()) == 1001
        assert process.wait(timeout=GUARD) == 0


def test_the_pty_vanishes_and_comes_back(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link = tmp_path / "ttyNODE"
    ws_port = free_port()
    sources = f"""[[sources]]
type = "serial"
device = "node"
path = "{link}"
reconnect_initial = 0.1
reconnect_max = 0.2
"""
    config = write_config(tmp_path / "gateway.toml", ws_port, mosquitto.port, sources)
    with (
        simulator("--link", link, "--disconnect", "2:1", *FAST),
        Subscriber(mosquitto, "tgw/node/status") as statuses,
        gateway(config),
    ):
        wait_healthy(ws_port)

        async def watch() -> list[dict[str, Any]]:
            async with connect(f"ws://127.0.0.1:{ws_port}") as client:
                await client.recv()
                await client.send(json.dumps({"type": "subscribe", "filters": ["node/status"]}))

                def back_online(got: list[dict[str, Any]]) -> bool:
                    changes = [m["online"] for m in got if m["type"] == "status"]
                    return False in changes and changes[-1] is True and changes.index(False) > -1

                return await receive_until(client, back_online, "offline then online")

        got = asyncio.run(watch())
        changes = [(m["online"], m["reason"]) for m in got if m["type"] == "status"]
        offline = changes.index(next(c for c in changes if not c[0]))
        assert any(online for online, _ in changes[offline:])
        assert metric(ws_port, "tgw_source_reconnects_total", device="node") >= 1
        mqtt_states = statuses.wait_until(
            lambda ms: (
                b"offline" in [m.payload for m in ms] and [m.payload for m in ms][-1] == b"online"
            ),
            "offline then online on MQTT",
        )
        assert mqtt_states[-1].retain or mqtt_states[-1].payload == b"online"


def test_readyz_says_why_the_gateway_is_not_ready_and_healthz_stays_200(
    tmp_path: Path,
) -> None:
    """No device and no broker: /readyz answers 503 with both reasons while /healthz
    answers 200; once the device and the broker are there, /readyz answers 200. The
    health and the greeting carry the same instance id."""
    link = tmp_path / "ttyNODE"
    ws_port = free_port()
    broker = Mosquitto()  # not started yet
    config = write_config(
        tmp_path / "gateway.toml",
        ws_port,
        broker.port,
        f'[[sources]]\ntype = "serial"\ndevice = "node"\npath = "{link}"',
    )
    config.write_text(
        config.read_text(encoding="utf-8") + "readiness_outage = 0.2\nreconnect_max = 0.2\n",
        encoding="utf-8",
    )

    def readiness() -> tuple[int, dict[str, Any]]:
        status, body = http_get(ws_port, "/readyz")
        return status, json.loads(body) if body else {}

    def wait_readiness(predicate: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + GUARD
        while time.monotonic() < deadline:
            status, body = readiness()
            if predicate(status, body):
                return body
            time.sleep(0.05)
        raise AssertionError(f"/readyz never said {what}; last: {readiness()}")

    try:
        with gateway(config):
            health = wait_healthy(ws_port)
            body = wait_readiness(
                lambda status, body: status == 503 and len(body["reasons"]) == 2,
                "503 with two reasons",
            )
            assert body["status"] == "not ready"
            assert body["reasons"][0] == "no device is online"
            assert body["reasons"][1].startswith(
                f"mqtt broker 127.0.0.1:{broker.port} unreachable for "
            )
            assert body["reasons"][1].endswith(": connection refused")
            assert http_get(ws_port, "/healthz")[0] == 200
            with simulator("--link", link, *FAST):
                broker.start()
                body = wait_readiness(lambda status, body: status == 200, "200")
                assert body == {"status": "ready", "reasons": []}

                async def greeting() -> dict[str, Any]:
                    async with connect(f"ws://127.0.0.1:{ws_port}") as client:
                        hello: dict[str, Any] = json.loads(await client.recv())
                        return hello

                hello = asyncio.run(greeting())
            assert len(health["instance"]) == 32
            assert hello["instance"] == health["instance"]
            assert hello["started"] == health["started"]
    finally:
        broker.close()


def test_broker_restart_queue_drains_and_counts_add_up(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    link = tmp_path / "ttyNODE"
    ws_port = free_port()
    sources = f'[[sources]]\ntype = "serial"\ndevice = "node"\npath = "{link}"\n'
    config = write_config(tmp_path / "gateway.toml", ws_port, mosquitto.port, sources)
    with simulator("--link", link, *FAST) as (fwsim, _), gateway(config):
        wait_healthy(ws_port)
        deadline = time.monotonic() + GUARD
        while metric(ws_port, "tgw_mqtt_published_total") < 20:
            assert time.monotonic() < deadline, "nothing published"
            time.sleep(0.05)
        mosquitto.stop()
        while metric(ws_port, "tgw_mqtt_queue_depth") < 50:  # frames pile up, kept
            assert time.monotonic() < deadline + GUARD, "the queue did not grow"
            time.sleep(0.05)
        assert metric(ws_port, "tgw_mqtt_connected") == 0
        mosquitto.start()
        fwsim.send_signal(signal.SIGTERM)  # no new frames: the queue must drain to zero
        fwsim.wait(timeout=GUARD)
        while metric(ws_port, "tgw_mqtt_queue_depth") > 0 or not metric(
            ws_port, "tgw_mqtt_connected"
        ):
            assert time.monotonic() < deadline + 3 * GUARD, "the queue did not drain"
            time.sleep(0.05)
        frames = sum(
            metric(ws_port, "tgw_frames_total", device="node", message=name)
            for name in ("identity", "heartbeat", "environment", "motion", "power", "event")
        )
        published = metric(ws_port, "tgw_mqtt_published_total")
        dropped = metric(ws_port, "tgw_mqtt_dropped_total", reason="queue_full")
        assert frames >= 50  # at least those that waited in the queue
        assert dropped == 0
        assert published == frames  # every decoded frame reached the broker, once


STATUS_CATALOG = """name = "clash"
[[messages]]
cmd = 1
name = "status"
"""


@pytest.mark.parametrize(
    ("config", "line"),
    [
        (
            '[[sources]]\ntype = "usb"\ndevice = "x"\n',
            "sources[0].type: expected one of 'serial', 'tcp'",
        ),
        (
            '[[sources]]\ntype = "tcp"\ndevice = "gateway"\nhost = "h"\nport = 1\n'
            "[mqtt]\nenabled = true\n",
            "sources[0].device: 'gateway' is reserved: <prefix>/gateway/status is the "
            "gateway's own status topic",
        ),
        (
            '[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "h"\nport = 1\n'
            '[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "h"\nport = 2\n',
            "sources[1].device: each device once, 'a' is taken",
        ),
        (
            '[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "h"\nport = 1\ncatalog = "CATALOG"\n'
            "[mqtt]\nenabled = true\n",
            "sources[0].catalog: catalog 'clash' has a message called 'status', whose topic "
            "would be the device's online status (<prefix>/a/status); rename the message",
        ),
        ("[mqtt]\nqos = 3\n", "mqtt.qos: input should be 0, 1 or 2, got 3"),
        ("[websocket]\nslow_policy = 'wait'\n", "websocket.slow_policy: input should be"),
        (
            '[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "h"\nport = 1\n'
            '[capture]\ndirectory = "c"\ndevices = ["a", "b"]\n',
            "capture.devices[1]: no source has device 'b' (devices: a)",
        ),
    ],
    ids=[
        "bad-type",
        "reserved-device",
        "duplicate-device",
        "status-message",
        "qos",
        "policy",
        "capture-device",
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, config: str, line: str) -> None:
    catalog = tmp_path / "clash.toml"
    catalog.write_text(STATUS_CATALOG, encoding="utf-8")
    path = tmp_path / "gateway.toml"
    path.write_text(config.replace("CATALOG", str(catalog)), encoding="utf-8")
    result = subprocess.run(
        [str(TGW), "run", "-c", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    [error] = result.stderr.splitlines()
    assert error.startswith(f"tgw: error: {path}: {line}")


@pytest.mark.parametrize("with_broker", [True, False], ids=["broker", "no-broker"])
def test_demo_serves_healthz_and_telemetry(
    tmp_path: Path, mosquitto: Mosquitto, with_broker: bool
) -> None:
    ws_port = free_port()
    mqtt_port = mosquitto.port if with_broker else free_port()
    with Subscriber(mosquitto, "tgw/#") as mqtt_subscriber:
        process = subprocess.Popen(
            [str(TGW), "demo", "--port", str(ws_port), "--mqtt", f"127.0.0.1:{mqtt_port}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            health = wait_healthy(ws_port)
            assert [s["device"] for s in health["sources"]] == ["demo-node"]

            async def telemetry() -> list[dict[str, Any]]:
                async with connect(f"ws://127.0.0.1:{ws_port}") as client:
                    await client.recv()
                    await client.send(json.dumps({"type": "subscribe", "filters": ["#"]}))
                    return await receive_until(
                        client,
                        lambda got: any(m.get("message") == "environment" for m in got),
                        "an environment message",
                    )

            got = asyncio.run(telemetry())
            environment = next(m for m in got if m.get("message") == "environment")
            assert 15 < environment["fields"]["temperature"] < 27
            if with_broker:
                mqtt_subscriber.wait_until(
                    lambda ms: any(m.topic == "tgw/demo-node/environment" for m in ms),
                    "demo telemetry on MQTT",
                )
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=GUARD) == 0
            assert process.stderr is not None
            log = process.stderr.read()
            process.stderr.close()
    assert ("running without MQTT" in log) is not with_broker
    assert "Traceback" not in log
    state = re.search(r"state kept in (\S+) \(a temporary directory, removed at exit\)", log)
    assert state, log
    assert not Path(state[1]).exists()


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(TGW), "demo", "--port", str(port), "--mqtt", f"127.0.0.1:{free_port()}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"tgw: error: websocket: cannot listen on 127.0.0.1:{port}: address already in use; "
        "choose another port with --port or [websocket] port"
    )
