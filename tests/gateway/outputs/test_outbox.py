"""The outbox: in order, a window handed out ahead of acknowledgements, removed only
when acknowledged (in any order), handed out again after a lost connection, bounded."""

from __future__ import annotations

import pytest

from gateway.outputs.outbox import MemoryOutbox, OutboundMessage, Outbox


def item(n: int, size: int = 1) -> OutboundMessage:
    return OutboundMessage(f"t/{n}", bytes([n]) * size, 1, False)


def topics(outbox: Outbox, limit: int) -> list[str]:
    return [entry.message.topic for entry in outbox.take(limit)]


def filled(count: int, capacity: int = 100) -> MemoryOutbox:
    outbox = MemoryOutbox(capacity)
    for n in range(count):
        assert outbox.put(item(n)) == 0
    return outbox


def test_take_hands_out_each_message_once_in_order_until_acknowledged() -> None:
    outbox = filled(5)
    first = outbox.take(2)
    assert [entry.message for entry in first] == [item(0), item(1)]
    assert topics(outbox, 10) == ["t/2", "t/3", "t/4"]
    assert outbox.take(10) == []  # all in flight
    assert len(outbox) == 5  # in flight is still kept
    for entry in first:
        outbox.acknowledge(entry.ident)
    assert len(outbox) == 3
    outbox.put(item(5))
    assert topics(outbox, 10) == ["t/5"]


def test_acknowledged_out_of_order_leaves_only_once_everything_before_is() -> None:
    outbox = filled(4)
    entries = outbox.take(4)
    outbox.acknowledge(entries[2].ident)
    outbox.acknowledge(entries[1].ident)
    assert len(outbox) == 4  # the oldest is still in flight
    outbox.acknowledge(entries[0].ident)
    assert len(outbox) == 1
    outbox.rewind()
    assert topics(outbox, 10) == ["t/3"]


def test_rewind_hands_out_again_what_is_not_acknowledged_and_skips_what_is() -> None:
    outbox = filled(5)
    entries = outbox.take(5)
    outbox.acknowledge(entries[0].ident)
    outbox.acknowledge(entries[3].ident)  # acknowledged while 1 and 2 were not
    outbox.rewind()
    assert topics(outbox, 10) == ["t/1", "t/2", "t/4"]


def test_a_full_outbox_drops_the_oldest_even_in_flight_and_says_how_many() -> None:
    outbox = filled(3, capacity=3)
    in_flight = outbox.take(2)
    assert [outbox.put(item(n)) for n in (3, 4)] == [1, 1]
    assert len(outbox) == 3
    outbox.acknowledge(in_flight[0].ident)  # dropped while in flight: ignored
    outbox.acknowledge(in_flight[1].ident)
    assert len(outbox) == 3
    assert topics(outbox, 10) == ["t/2", "t/3", "t/4"]


def test_the_byte_limit_drops_as_many_as_it_takes_but_keeps_one() -> None:
    outbox = MemoryOutbox(100, max_bytes=30)
    for n in range(3):
        outbox.put(item(n, size=10))
    assert outbox.bytes == 30
    assert outbox.put(item(3, size=25)) == 3  # 55 bytes: down to the newest, 25
    assert (len(outbox), outbox.bytes) == (1, 25)
    assert outbox.put(item(4, size=100)) == 1
    assert (len(outbox), outbox.bytes) == (1, 100)  # one message is kept whatever its size


def test_oldest_says_when_the_oldest_message_was_put() -> None:
    outbox = MemoryOutbox(10)
    assert outbox.oldest is None
    outbox.put(item(0))
    first = outbox.oldest
    assert first is not None
    outbox.put(item(1))
    assert outbox.oldest == first
    [entry] = outbox.take(1)
    outbox.acknowledge(entry.ident)
    assert outbox.oldest is not None
    assert outbox.oldest >= first


def test_outbox_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        MemoryOutbox(0)
    assert MemoryOutbox(1).take(5) == []
    MemoryOutbox(1).acknowledge(42)  # nothing to acknowledge: ignored
