"""The pipeline benchmark's consumers count what a server sends, however reads cut it.

bench/pipeline_ends.py's subscribers look at raw bytes: the counting one counts a mark
per envelope, the timing one walks WebSocket frames, the MQTT counter walks MQTT
packets. Their counts decide whether the benchmark says something was lost, so they
are fed the same bytes whole, byte by byte and in random chunks, and must agree.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from pipeline_ends import (
    CountingSubscriber,
    MqttCounter,
    TimingSubscriber,
)

Subscriber = TypeVar("Subscriber", CountingSubscriber, TimingSubscriber)


def envelope(seq: int, padding: int = 0) -> bytes:
    return (
        b'{"type":"message","seq":%d,"device":"bench","message":"environment","cmd":16,'
        b'"time":%r,"fields":{"text":"%s"}}' % (seq, time.time(), b"x" * padding)
    )


def text_frame(payload: bytes) -> bytes:
    """A server's (unmasked) text frame."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def stream(seqs: Sequence[int]) -> bytes:
    """Envelopes of every size class of frame, with a dropped notice and a ping between."""
    frames = []
    for index, seq in enumerate(seqs):
        frames.append(text_frame(envelope(seq, padding=(0, 150, 70_000)[index % 3])))
        if index == 1:
            frames.append(text_frame(b'{"type":"dropped","count":3}'))
            frames.append(bytes((0x89, 0)))  # a ping
    return b"".join(frames)


def cut(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    chunks, position = [], 0
    for size in sizes:
        if position >= len(data):
            break
        chunks.append(data[position : position + size])
        position += size
    if position < len(data):
        chunks.append(data[position:])
    return chunks


def fed(make: Callable[[], Subscriber], chunks: Sequence[bytes]) -> Subscriber:
    async def feed() -> Subscriber:
        subscriber = make()
        for chunk in chunks:
            buffer = bytearray(chunk) + b"\0" * 7  # the shared buffer holds more than the read
            subscriber.take(buffer, len(chunk))
        return subscriber

    return asyncio.run(feed())


SEQS = [1, 2, 3, 5, 6, 6, 7]
"""One number skipped (4), one received twice (6)."""
DATA = stream(SEQS)


def counting() -> CountingSubscriber:
    return CountingSubscriber("127.0.0.1", 1, subscribe=None)


def timing() -> TimingSubscriber:
    subscriber = TimingSubscriber("127.0.0.1", 1, subscribe=None)
    subscriber.recording = True
    return subscriber


def test_whole_and_byte_by_byte_count_the_same() -> None:
    for chunks in ([DATA], [DATA[i : i + 1] for i in range(len(DATA))]):
        assert fed(counting, chunks).messages == len(SEQS)
        timer = fed(timing, chunks)
        assert (timer.messages, timer.gaps, timer.repeats) == (len(SEQS), 1, 1)
        assert timer.dropped_notices == 1
        assert len(timer.samples) == len(SEQS)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=40))
def test_random_chunks_count_the_same(sizes: list[int]) -> None:
    chunks = cut(DATA, sizes)
    assert fed(counting, chunks).messages == len(SEQS)
    timer = fed(timing, chunks)
    assert (timer.messages, timer.gaps, timer.repeats) == (len(SEQS), 1, 1)


def publish(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big") + payload
    size, length = len(body), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes((0x32,)) + bytes(length) + body


class Transport:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=30))
def test_the_mqtt_counter_counts_distinct_seqs_and_acknowledges_each(sizes: list[int]) -> None:
    packets = [publish(b"tgw/bench/environment", envelope(seq, 200), seq) for seq in SEQS]
    packets.insert(2, publish(b"tgw/bench/status", b"online", 99))  # another topic
    data = b"".join(packets)

    async def feed() -> tuple[MqttCounter, Transport]:
        counter = MqttCounter("tgw/bench/environment", qos=1, client_id="test")
        transport = Transport()
        counter.transport = transport  # type: ignore[assignment]
        for chunk in cut(data, sizes):
            counter.data_received(chunk)
        return counter, transport

    counter, transport = asyncio.run(feed())
    assert (counter.messages, counter.distinct) == (len(SEQS), len(set(SEQS)))
    acks = [transport.written[i : i + 4] for i in range(0, len(transport.written), 4)]
    assert sorted(acks) == sorted(b"\x40\x02" + n.to_bytes(2, "big") for n in [*SEQS, 99])
