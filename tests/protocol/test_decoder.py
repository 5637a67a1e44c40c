"""The stream decoder's bookkeeping: statistics, bounded memory, reporting, restart."""

from __future__ import annotations

import random

from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import ErrorKind, Frame, StreamError
from protocol.schema import Schema
from tests.protocol.streams import chunkings, decode

POWER = bytes.fromhex("AA 55 12 05 00 74 0E FB FF 5A EC")


def test_statistics_count_frames_errors_and_bytes(default_schema: Schema) -> None:
    mismatch = bytes.fromhex("AA 55 12 03 00 01 02 03 1A")
    unknown = bytes.fromhex("AA 55 99 03 00 61 62 63 C1")
    stream = b"\x00\x01" + POWER + POWER[:-1] + b"\x00" + mismatch + unknown + b"\xaa\x55\x10"
    decoder = StreamDecoder(default_schema)
    decoder.feed(stream)
    before_end = decoder.statistics()
    assert before_end.bytes_pending == 3  # the truncated header, waiting
    decoder.finish()
    statistics = decoder.statistics()
    assert statistics.bytes_fed == len(stream)
    assert statistics.frames == 2
    assert statistics.unknown_frames == 1
    assert statistics.errors == {
        ErrorKind.GARBAGE: 1,  # before the first frame; the rejected candidates' bytes are theirs
        ErrorKind.BAD_CHECKSUM: 1,
        ErrorKind.PAYLOAD_MISMATCH: 1,
        ErrorKind.TRUNCATED: 1,
    }
    assert statistics.bytes_in_frames == len(POWER) + len(unknown)
    assert statistics.bytes_skipped == 2 + len(POWER) + len(mismatch) + 3
    assert statistics.bytes_pending == 0


def test_long_garbage_is_reported_in_blocks_whatever_the_chunking(default_schema: Schema) -> None:
    noise = bytes(50)
    for name, chunks in chunkings(noise + POWER).items():
        decoder = StreamDecoder(default_schema, garbage_report_bytes=16)
        events = [event for chunk in chunks for event in decoder.feed(chunk)]
        events += decoder.finish()
        garbage = [(e.offset, e.size) for e in events if isinstance(e, StreamError)]
        assert garbage == [(0, 16), (16, 16), (32, 16), (48, 2)], name
        assert isinstance(events[-1], Frame)


def test_garbage_is_reported_while_it_lasts_not_only_at_the_end(default_schema: Schema) -> None:
    decoder = StreamDecoder(default_schema, garbage_report_bytes=100)
    assert decoder.feed(bytes(99)) == []
    [event] = decoder.feed(bytes(1))
    assert event == StreamError(
        kind=ErrorKind.GARBAGE, offset=0, size=100, detail="skipped 100 bytes"
    )


def test_buffer_stays_bounded_under_a_flood_of_fake_headers(default_schema: Schema) -> None:
    rng = random.Random(7)
    decoder = StreamDecoder(default_schema)
    largest = 0
    for _ in range(2000):
        # a plausible header promising up to 256 bytes, then noise that never completes it
        chunk = b"\xaa\x55" + bytes([rng.randrange(256), rng.randrange(256), 0]) + rng.randbytes(40)
        decoder.feed(chunk)
        largest = max(largest, decoder.statistics().bytes_pending)
    assert largest < 5 + 256 + 1  # the largest frame
    # the last fake header may hold up to 256 bytes back; after that, every frame is found
    events = decoder.feed(POWER * 30)
    assert sum(isinstance(event, Frame) and event.raw == POWER for event in events) >= 30 - 24


def test_finish_flushes_and_the_decoder_carries_on(default_schema: Schema) -> None:
    decoder = StreamDecoder(default_schema)
    assert decoder.feed(POWER[:6]) == []
    [truncated] = decoder.finish()  # one fault, one error: its bytes are not garbage too
    assert isinstance(truncated, StreamError)
    assert (truncated.kind, truncated.offset, truncated.size) == (ErrorKind.TRUNCATED, 0, 6)
    assert decoder.statistics().bytes_skipped == 6
    [frame] = decoder.feed(POWER)
    assert isinstance(frame, Frame)
    assert frame.offset == 6  # offsets continue across finish()
    assert decoder.finish() == []


def test_accepts_bytearray_and_memoryview(default_schema: Schema) -> None:
    decoder = StreamDecoder(default_schema)
    [first] = decoder.feed(bytearray(POWER))
    [second] = decoder.feed(memoryview(POWER))
    assert isinstance(first, Frame)
    assert isinstance(second, Frame)
    assert isinstance(second.raw, bytes)
    assert second.offset == len(POWER)


def test_sequence_and_address_come_from_the_header(crc_schema: Schema) -> None:
    encoder = FrameEncoder(crc_schema)
    stream = b"".join(
        encoder.encode(
            "power",
            {"battery": n, "current": 0, "charge": 1},
            header={"sequence": n, "address": 9},
        )
        for n in range(256)
    )
    events = decode(crc_schema, [stream])
    assert [e.header for e in events if isinstance(e, Frame)] == [
        {"sequence": n, "address": 9} for n in range(256)
    ]


def test_default_profile_frames_have_no_header_fields(default_schema: Schema) -> None:
    [frame] = StreamDecoder(default_schema).feed(POWER)
    assert isinstance(frame, Frame)
    assert frame.header == {}


def test_events_match_as_a_small_vocabulary(default_schema: Schema) -> None:
    seen = []
    for event in decode(default_schema, [b"\x00" + POWER]):
        match event:
            case Frame(message=name, fields={"battery": battery}):
                seen.append(f"{name} {battery}")
            case StreamError(kind=ErrorKind.GARBAGE, size=size):
                seen.append(f"garbage {size}")
    assert seen == ["garbage 1", "power 3700"]
