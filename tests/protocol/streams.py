"""Helpers for feeding streams to the decoder in different chunkings."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence

from protocol.decoder import StreamDecoder
from protocol.events import Event
from protocol.schema import Schema


def decode(schema: Schema, chunks: Iterable[bytes]) -> list[Event]:
    """Feed ``chunks`` to a fresh decoder, then finish; return every event."""
    decoder = StreamDecoder(schema)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.finish())
    return events


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Split ``data`` at the offsets ``cuts``."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def random_chunks(data: bytes, seed: int) -> list[bytes]:
    """Split ``data`` into chunks of random sizes between 1 and 64 bytes."""
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, 64)
        chunks.append(data[pos : pos + step])
        pos += step
    return chunks


def chunkings(data: bytes) -> dict[str, list[bytes]]:
    """The same stream whole, byte by byte and in random chunks."""
    return {
        "whole": [data],
        "byte_by_byte": [data[i : i + 1] for i in range(len(data))],
        "random_1": random_chunks(data, 1),
        "random_2": random_chunks(data, 2),
    }
