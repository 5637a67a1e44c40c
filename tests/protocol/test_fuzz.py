"""Fuzzing the decoder: whatever arrives, it never raises, never loses a good frame,
accounts for every byte, and does not care how the bytes were chunked."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import ErrorKind, Event, Frame
from protocol.schema import Schema
from tests.protocol.streams import random_chunks, split


def run(schema: Schema, chunks: list[bytes]) -> tuple[list[Event], StreamDecoder]:
    decoder = StreamDecoder(schema)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
        assert (
            decoder.statistics().bytes_pending
            < schema.profile.overhead + schema.profile.max_payload
        )
    events.extend(decoder.finish())
    return events, decoder


def check_accounting(
    schema: Schema, data: bytes, events: list[Event], decoder: StreamDecoder
) -> None:
    """Every byte is in a frame, a garbage run or a rejected candidate; no byte of a frame
    or of a rejected candidate is also reported as garbage (one fault, one error)."""
    statistics = decoder.statistics()
    assert statistics.bytes_fed == len(data)
    assert statistics.bytes_pending == 0
    assert statistics.bytes_in_frames + statistics.bytes_skipped == len(data)
    in_frame, in_garbage, in_rejected = (bytearray(len(data)) for _ in range(3))
    for event in events:
        if isinstance(event, Frame):
            span, raw = range(event.offset, event.offset + len(event.raw)), event.raw
            assert data[span.start : span.stop] == raw
            schema.parse_frame_with_construct(raw)  # the checksum really holds
            marks = in_frame
        else:
            span = range(event.offset, event.offset + event.size)
            marks = in_garbage if event.kind == ErrorKind.GARBAGE else in_rejected
        for index in span:
            assert not (marks is not in_rejected and marks[index]), f"byte {index} twice"
            marks[index] = 1
    for index in range(len(data)):
        assert in_frame[index] + in_garbage[index] <= 1, f"byte {index} in a frame and garbage"
        assert not (in_garbage[index] and in_rejected[index]), f"byte {index} reported twice"
        assert in_frame[index] or in_garbage[index] or in_rejected[index], f"byte {index} lost"
    assert sum(in_garbage) <= statistics.bytes_skipped
    assert statistics.frames == sum(isinstance(event, Frame) for event in events)


def check_offset_order(events: list[Event]) -> None:
    offsets = [event.offset for event in events]
    assert offsets == sorted(offsets), f"events out of offset order: {offsets}"


@settings(max_examples=300)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_random_bytes_never_raise_and_chunking_does_not_matter(
    default_schema: Schema, data: bytes, cuts: list[int]
) -> None:
    whole, decoder = run(default_schema, [data])
    check_accounting(default_schema, data, whole, decoder)
    check_offset_order(whole)
    chunked, _ = run(default_schema, split(data, [cut for cut in cuts if cut <= len(data)]))
    assert chunked == whole
    byte_by_byte, _ = run(default_schema, [data[i : i + 1] for i in range(len(data))])
    assert byte_by_byte == whole


@settings(max_examples=300)
@given(
    data=st.lists(st.sampled_from([b"\xaa", b"\x55", b"\xaa\x55", b"\x00", b"\x12", b"\x05"]))
    .map(b"".join)
    .filter(lambda data: len(data) < 400),
    seed=st.integers(0, 2**16),
)
def test_sync_heavy_noise_comes_out_in_offset_order(
    default_schema: Schema, data: bytes, seed: int
) -> None:
    # random bytes seldom hold a sync pair; this noise is made of little else
    whole, decoder = run(default_schema, [data])
    check_accounting(default_schema, data, whole, decoder)
    check_offset_order(whole)
    for chunks in ([data[i : i + 1] for i in range(len(data))], random_chunks(data, seed)):
        assert run(default_schema, chunks)[0] == whole


@st.composite
def mutated_streams(draw: st.DrawFn, schema: Schema) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A stream of valid frames with random mutations; returns it with the intact frames."""
    encoder = FrameEncoder(schema)
    rng = random.Random(draw(st.integers(0, 2**32)))
    pieces: list[bytes] = []
    for _ in range(draw(st.integers(1, 12))):
        cmd = rng.choice([*schema.messages, 0x7F])
        size = schema.messages[cmd].size if cmd in schema.messages else rng.randint(0, 40)
        pieces.append(encoder.encode_raw(cmd, rng.randbytes(size)))
    stream = bytearray(b"".join(pieces))
    touched = [False] * (len(stream) + 1)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(stream)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "sync"]))
        if kind == "flip" and at < len(stream):
            stream[at] ^= 1 << draw(st.integers(0, 7))
            touched[at] = True
        elif kind in {"insert", "sync"}:
            extra = (
                schema.profile.sync if kind == "sync" else draw(st.binary(min_size=1, max_size=8))
            )
            stream[at:at] = extra
            touched[at:at] = [True] * len(extra)
        elif kind == "delete" and at < len(stream):
            del stream[at]
            del touched[at]
            touched[at] = True
    intact, offset = [], 0
    for piece in pieces:  # find each piece where it still stands untouched
        found = bytes(stream).find(piece, offset)
        if found >= 0 and not any(touched[found : found + len(piece)]):
            intact.append((found, piece))
            offset = found + len(piece)
    return bytes(stream), intact


@settings(max_examples=300)
@given(data=st.data())
def test_mutated_streams_lose_no_intact_frame(
    default_schema: Schema, crc_schema: Schema, data: st.DataObject
) -> None:
    schema = data.draw(st.sampled_from([default_schema, crc_schema]))
    stream, intact = data.draw(mutated_streams(schema))
    events, decoder = run(schema, [stream])
    check_accounting(schema, stream, events, decoder)
    check_offset_order(events)
    frames = {(event.offset, event.raw) for event in events if isinstance(event, Frame)}
    # a false frame whose checksum matched by chance may hide the frames it overlaps
    consumed = [
        (event.offset, event.offset + len(event.raw))
        for event in events
        if isinstance(event, Frame)
    ]
    for offset, piece in intact:
        if (offset, piece) not in frames:
            assert any(start < offset < end for start, end in consumed), (
                f"intact frame at {offset} lost without a colliding frame over it"
            )
    chunked, _ = run(schema, [stream[i : i + 7] for i in range(0, len(stream), 7)])
    assert chunked == events
