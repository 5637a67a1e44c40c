"""The disk outbox: what waits for the broker survives a restart, in order; commits are
batched; a corrupt file is moved aside, never deleted; a file in use is refused."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.outputs.disk_outbox import DiskOutbox
from gateway.outputs.mqtt import MqttPublisher, build
from gateway.outputs.outbox import OutboundMessage
from gateway.runtime.metrics import GatewayMetrics
from protocol.errors import ConfigError
from protocol.schema import Schema
from tests.gateway.broker import GUARD, Mosquitto, Subscriber, free_port
from tests.gateway.outputs.test_mqtt import PREFIX, config, context, data, running, until


def message(number: int, size: int = 10) -> OutboundMessage:
    return OutboundMessage(f"t/{number}", str(number).encode().ljust(size, b"."), 1, False)


def drain(outbox: DiskOutbox) -> list[str]:
    """Take everything and acknowledge it, as a broker would; the topics, in order."""
    topics = []
    while entries := outbox.take(7):
        for entry in entries:
            topics.append(entry.message.topic)
            outbox.acknowledge(entry.ident)
    return topics


def acknowledge(outbox: DiskOutbox, count: int) -> None:
    for entry in outbox.take(count):
        outbox.acknowledge(entry.ident)


def outbox(path: Path, **changes: Any) -> DiskOutbox:
    settings: dict[str, Any] = {"capacity": 1000, "max_bytes": 1 << 20, **changes}
    return DiskOutbox(path, **settings)


def test_what_waits_survives_a_restart_in_order(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite"  # the folder is made
    first = outbox(path)
    for number in range(10):
        first.put(message(number))
    acknowledge(first, 3)  # by the broker
    first.take(2)  # in flight when the gateway stopped: they go again
    first.close()
    second = outbox(path)
    assert len(second) == 7
    second.put(message(10))  # new messages go after what was left
    assert drain(second) == [f"t/{number}" for number in range(3, 11)]
    second.close()
    assert len(outbox(path)) == 0


@pytest.mark.parametrize(
    ("limits", "kept"),
    [({"capacity": 4}, 4), ({"max_bytes": 45}, 4)],
    ids=["count", "bytes"],
)
def test_a_full_outbox_drops_the_oldest_on_disk_too(
    tmp_path: Path, limits: dict[str, int], kept: int
) -> None:
    path = tmp_path / "outbox.sqlite"
    first = outbox(path, **limits)
    dropped = [first.put(message(number)) for number in range(10)]
    assert dropped == [0] * kept + [1] * (10 - kept)
    first.close()
    assert drain(outbox(path, **limits)) == [f"t/{number}" for number in range(10 - kept, 10)]


def test_commits_are_batched_not_one_per_message(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    commits: list[float] = []
    batched = outbox(
        path, capacity=10_000, commit_interval=10.0, commit_batch=1000, observe=commits.append
    )
    for number in range(5000):
        batched.put(message(number))
    batched.close()
    assert 1 <= len(commits) <= 6  # 5,000 messages, batches of 1,000, the last at close
    assert len(outbox(path, capacity=10_000)) == 5000


def test_a_corrupt_file_is_moved_aside_and_the_outbox_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite"
    garbage = b"not a database, " * 512
    path.write_bytes(garbage)
    with caplog.at_level(logging.ERROR, logger="gateway.runtime.state_file"):
        fresh = outbox(path)
    [aside] = tmp_path.glob("outbox.sqlite.corrupt-*")
    assert aside.read_bytes() == garbage  # kept, for whoever wants to look
    assert len(fresh) == 0
    fresh.put(message(1))
    fresh.close()
    assert drain(outbox(path)) == ["t/1"]
    [error] = [record.getMessage() for record in caplog.records]
    assert f"{path} cannot be read" in error
    assert f"moved aside to {aside}" in error


def test_a_file_in_use_by_another_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    first = outbox(path)
    try:
        with pytest.raises(ConfigError, match="in use by another gateway"):
            DiskOutbox(path, capacity=10, max_bytes=4096, source="gw.toml")
    finally:
        first.close()
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_backlog_of_a_gateway_that_stopped_without_a_broker_is_published_next_time(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The broker is away, the gateway closes with 50 messages waiting; the next run,
    with the broker back, publishes them first and in order."""
    path = tmp_path / "outbox.sqlite"

    async def first_run() -> None:
        away = outbox(path, capacity=1000)
        publisher = MqttPublisher(config(free_port()), GatewayMetrics(), outbox=away)
        async with running(publisher):
            for number in range(50):
                publisher.publish_message(f"node-1/m{number}", str(number).encode())
            await until(lambda: publisher.health()["last_error"] is not None, "an attempt")
            await publisher.close(asyncio.get_running_loop().time() + GUARD)

    async def second_run() -> None:
        publisher = MqttPublisher(
            config(mosquitto.port), GatewayMetrics(), outbox=outbox(path, capacity=1000)
        )
        async with running(publisher):
            publisher.publish_message("node-1/new", b"new")
            await until(lambda: publisher.health()["queue_depth"] == 0, "the backlog sent")
            await publisher.close(asyncio.get_running_loop().time() + GUARD)

    asyncio.run(first_run())
    with Subscriber(mosquitto, f"{PREFIX}/node-1/+") as subscriber:
        asyncio.run(second_run())
        got = subscriber.wait_until(lambda ms: len(data(ms)) >= 51, "51 messages")
    assert [m.payload for m in data(got)] == [str(n).encode() for n in range(50)] + [b"new"]


def test_a_state_dir_puts_the_outbox_on_disk(tmp_path: Path, default_schema: Schema) -> None:
    in_memory = build(context(default_schema, "node-1"))
    assert in_memory is not None
    assert list(tmp_path.iterdir()) == []
    on_disk = build(context(default_schema, "node-1", state_dir=tmp_path))
    assert on_disk is not None
    assert (tmp_path / "mqtt-outbox.sqlite").exists()

    async def close() -> None:
        for output in (in_memory, on_disk):
            await output.close(asyncio.get_running_loop().time() + GUARD)

    asyncio.run(close())
