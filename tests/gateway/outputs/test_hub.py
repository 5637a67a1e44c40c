"""The hub: one serialisation for all, filters, statuses, slow subscribers.

Envelopes carry real frames (built by the encoder, read back by the stream decoder),
numbered and serialised by a journal as the gateway does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from gateway.outputs.websocket.hub import MAX_FILTERS, Hub, HubStatistics, Subscriber
from gateway.runtime.envelope import Envelope
from gateway.runtime.journal import Journal, Published
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.status import DeviceStatus
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import Frame
from protocol.schema import Schema

ENVIRONMENT = {"temperature": 21.5, "humidity": 40.0, "pressure": 1013.2}
POWER = {"battery": 3700, "current": -5, "charge": 90}

Make = Callable[..., Envelope]


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
def make(default_schema: Schema) -> Make:
    """``make(device, message="environment") -> Envelope`` with a real decoded frame."""
    encoder = FrameEncoder(default_schema)
    decoder = StreamDecoder(default_schema)
    fields: dict[str, dict[str, Any]] = {"environment": ENVIRONMENT, "power": POWER}

    def make(device: str, message: str = "environment") -> Envelope:
        (frame,) = decoder.feed(encoder.encode(message, fields[message]))
        assert isinstance(frame, Frame)
        return Envelope(device, frame, received=1764063421.5)

    return make


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def take(subscriber: Subscriber, count: int) -> list[tuple[int, bytes]]:
    """The next ``count`` items of ``subscriber``, which must already be there."""

    async def run() -> list[tuple[int, bytes]]:
        async with asyncio.timeout(10):
            return [await subscriber.next() for _ in range(count)]

    return asyncio.run(run())


class Relay:
    """A journal that numbers and serialises, and a hub that fans out: as the gateway does."""

    def __init__(self, metrics: GatewayMetrics, history: int = 100) -> None:
        self.journal = Journal(history=history)
        self.hub = Hub(metrics=metrics)

    def publish(self, envelope: Envelope) -> Published:
        published = self.journal.append(envelope)
        self.hub.publish(published)
        return published


def status(device: str, online: bool, reason: str) -> DeviceStatus:
    return DeviceStatus(device, online, reason, 1764063422.5)


def subscriber(
    *filters: str, queue_size: int = 100, policy: Any = "drop", hub: Hub | None = None
) -> Subscriber:
    result = Subscriber(
        queue_size=queue_size,
        policy=policy,
        name="test",
        on_filters_changed=hub.forget_routes if hub is not None else lambda: None,
    )
    result.subscribe(filters)
    return result


def test_one_serialisation_shared_by_every_subscriber(metrics: GatewayMetrics, make: Make) -> None:
    relay = Relay(metrics)
    first, second = subscriber("#"), subscriber("node-1/+")
    relay.hub.add(first)
    relay.hub.add(second)
    published = relay.publish(make("node-1"))
    ((seq1, payload1),) = take(first, 1)
    ((seq2, payload2),) = take(second, 1)
    (entry,) = relay.journal.since(0).entries
    assert seq1 == seq2 == entry[0] == published.seq == 1
    assert payload1 is payload2
    assert payload1 is entry[2]
    assert payload1 is published.payload
    assert sample(metrics, "tgw_websocket_messages_sent_total") == 2


def test_filters_are_honoured(metrics: GatewayMetrics, make: Make) -> None:
    relay = Relay(metrics)
    node1 = subscriber("node-1/+")
    power = subscriber("+/power", hub=relay.hub)  # its filters change while registered
    nothing = subscriber()
    for each in (node1, power, nothing):
        relay.hub.add(each)
    relay.publish(make("node-1", "environment"))  # 1
    relay.publish(make("node-2", "power"))  # 2
    relay.publish(make("node-1", "power"))  # 3
    relay.publish(make("node-2", "environment"))  # 4
    assert [seq for seq, _ in take(node1, node1.buffered)] == [1, 3]
    assert [seq for seq, _ in take(power, power.buffered)] == [2, 3]
    assert nothing.buffered == 0
    power.unsubscribe(["+/power", "not/held"])
    power.subscribe(["node-2/environment"])
    assert power.filters == ["node-2/environment"]
    relay.publish(make("node-2", "power"))  # 5
    relay.publish(make("node-2", "environment"))  # 6
    assert [seq for seq, _ in take(power, power.buffered)] == [6]


def test_removed_subscribers_get_nothing(metrics: GatewayMetrics, make: Make) -> None:
    relay = Relay(metrics)
    gone = subscriber("#")
    relay.hub.add(gone)
    assert relay.hub.statistics().subscribers == 1
    relay.hub.remove(gone)
    relay.hub.remove(gone)
    assert relay.hub.statistics().subscribers == 0
    relay.publish(make("node-1"))
    relay.hub.publish_status(status("node-1", True, "frames"))
    assert gone.buffered == 0


def test_bad_filters_change_nothing() -> None:
    held = subscriber("node-1/+")
    with pytest.raises(ValueError, match="'#' must be the last level"):
        held.subscribe(["node-2/+", "#/x"])
    assert held.filters == ["node-1/+"]
    with pytest.raises(ValueError, match=f"expected at most {MAX_FILTERS}"):
        held.subscribe([f"node-{n}/+" for n in range(2, MAX_FILTERS + 2)])
    assert held.filters == ["node-1/+"]
    held.subscribe(["node-1/+", "#"])
    assert held.filters == ["node-1/+", "#"]


def test_drop_policy_drops_new_messages_and_tells(metrics: GatewayMetrics, make: Make) -> None:
    relay = Relay(metrics)
    slow = subscriber("#", queue_size=3)
    relay.hub.add(slow)
    for _ in range(8):
        relay.publish(make("node-1"))
    assert slow.buffered == 3
    assert slow.dropped == slow.pending_dropped == 5
    assert sample(metrics, "tgw_websocket_messages_dropped_total", reason="slow_subscriber") == 5
    assert sample(metrics, "tgw_websocket_messages_sent_total") == 3
    assert relay.hub.statistics() == HubStatistics(
        subscribers=1, subscribed=1, buffered=3, dropped=5
    )
    notice, *kept = take(slow, 4)
    assert notice == (0, b'{"type":"dropped","count":5}')
    assert [seq for seq, _ in kept] == [1, 2, 3]  # the new ones were dropped
    assert slow.pending_dropped == 0
    # The next burst is reported on its own.
    for _ in range(5):
        relay.publish(make("node-1"))
    assert slow.buffered == 3
    notice, *kept = take(slow, 4)
    assert orjson.loads(notice[1]) == {"type": "dropped", "count": 2}
    assert [seq for seq, _ in kept] == [9, 10, 11]
    assert slow.dropped == 7


def test_disconnect_policy_flags_overflow(metrics: GatewayMetrics, make: Make) -> None:
    relay = Relay(metrics)
    slow = subscriber("#", queue_size=3, policy="disconnect")
    relay.hub.add(slow)
    for _ in range(3):
        relay.publish(make("node-1"))
    assert not slow.overflowed
    relay.publish(make("node-1"))
    assert slow.overflowed
    assert slow.behind == 4
    assert slow.buffered == 0  # released: its connection is to be closed
    relay.publish(make("node-1"))
    assert slow.behind == 5

    async def wait() -> int:
        async with asyncio.timeout(10):
            return await slow.wait_overflowed()

    assert asyncio.run(wait()) == 5


def test_memory_stays_bounded_with_a_subscriber_that_never_reads(
    metrics: GatewayMetrics, make: Make
) -> None:
    relay = Relay(metrics, history=50)
    never = subscriber("#", queue_size=10)
    relay.hub.add(never)
    envelope = make("node-1")
    online = status("node-1", True, "frames")
    for _ in range(5000):
        relay.publish(envelope)
        assert never.buffered <= 10
        relay.hub.publish_status(online)
        assert never.buffered <= 10
    assert never.buffered == 10
    assert never.dropped == 10000 - 10


def test_statuses_go_to_everyone(metrics: GatewayMetrics) -> None:
    hub = Hub(metrics=metrics)
    filtered = subscriber("node-9/+")
    hub.add(filtered)
    hub.publish_status(status("node-2", False, "silent for 10 s"))
    hub.publish_status(status("node-1", True, "frames"))
    hub.publish_status(status("node-1", False, "port closed"))
    items = take(filtered, 3)
    assert [seq for seq, _ in items] == [0, 0, 0]
    assert [orjson.loads(payload) for _, payload in items] == [
        status("node-2", False, "silent for 10 s").record(),
        status("node-1", True, "frames").record(),
        status("node-1", False, "port closed").record(),
    ]
    assert orjson.loads(items[2][1]) == {
        "type": "status",
        "device": "node-1",
        "online": False,
        "reason": "port closed",
        "time": 1764063422.5,
    }


def test_next_waits_for_a_message(metrics: GatewayMetrics, make: Make) -> None:
    relay = Relay(metrics)

    async def run() -> tuple[int, bytes]:
        waiting = subscriber("#")
        relay.hub.add(waiting)
        async with asyncio.timeout(10), asyncio.TaskGroup() as group:
            task = group.create_task(waiting.next())
            await asyncio.sleep(0)
            assert not task.done()
            relay.publish(make("node-1"))
        return task.result()

    seq, payload = asyncio.run(run())
    assert seq == 1
    assert orjson.loads(payload)["seq"] == 1


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue size 0"):
        Subscriber(queue_size=0)


def test_write_now_skips_the_buffer_while_it_is_empty(metrics: GatewayMetrics, make: Make) -> None:
    relay = Relay(metrics)
    written: list[int] = []
    accepting = True

    def write_now(seq: int, payload: bytes) -> bool:
        if accepting:
            written.append(seq)
        return accepting

    direct = Subscriber(queue_size=10, name="direct", write_now=write_now)
    direct.subscribe(["#"])
    relay.hub.add(direct)
    relay.publish(make("node-1"))  # 1: written
    accepting = False
    relay.publish(make("node-1"))  # 2: refused, buffered
    accepting = True
    relay.publish(make("node-1"))  # 3: buffered behind 2, write_now not asked
    assert written == [1]
    assert [seq for seq, _ in take(direct, 2)] == [2, 3]
    relay.publish(make("node-1"))  # 4: the buffer is empty again
    assert written == [1, 4]
    assert sample(metrics, "tgw_websocket_messages_sent_total") == 4
