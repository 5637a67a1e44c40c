"""Resynchronisation, as a table of named cases.

Each case is a stream and the events it must produce, written out by hand. Every case
runs whole, byte by byte and in random chunks, and must give the same events each way.
One fault, one error: the bytes of a rejected candidate frame are hunted through again,
but those skipped are not reported a second time as garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from protocol.decoder import StreamDecoder
from protocol.events import Event, Frame
from protocol.schema import Schema
from tests.protocol.streams import chunkings, decode, split

# Hand-written frames of the default profile (see test_fixtures.py for how they add up).
POWER = bytes.fromhex("AA 55 12 05 00 74 0E FB FF 5A EC")  # 11 bytes, "power"
ENVIRONMENT = bytes.fromhex("AA 55 10 08 00 66 08 A0 0F 94 27 00 00 EF")  # 14 bytes
UNKNOWN = bytes.fromhex("AA 55 99 03 00 61 62 63 C1")  # 9 bytes, cmd 0x99
SYNC_IN_PAYLOAD = bytes.fromhex("AA 55 12 05 00 AA 55 00 00 00 15")  # power, battery 0x55AA
# addressed-crc16: C3 | len u16be | seq | addr | cmd u16be | payload | crc16 be
CRC_POWER = bytes.fromhex("C3 00 05 07 03 00 12 74 0E EC FF 58 C5 ED")  # 14 bytes

Summary = tuple[str, int] | tuple[str, int, int]


def summarise(events: list[Event]) -> list[Summary]:
    """Frames as ("frame", offset), garbage as ("garbage", offset, size), others (kind, offset)."""
    result: list[Summary] = []
    for event in events:
        if isinstance(event, Frame):
            result.append(("frame", event.offset))
        elif event.kind == "garbage":
            result.append(("garbage", event.offset, event.size))
        else:
            result.append((event.kind.value, event.offset))
    return result


@dataclass(frozen=True)
class Case:
    name: str
    stream: bytes
    expected: list[Summary]
    profile: str = "default"


CASES = [
    Case("back to back", POWER + ENVIRONMENT, [("frame", 0), ("frame", 11)]),
    Case("garbage before", b"\x01\x02\x03" + POWER, [("garbage", 0, 3), ("frame", 3)]),
    Case("garbage after", POWER + b"\x01\x02", [("frame", 0), ("garbage", 11, 2)]),
    Case(
        "garbage between",
        POWER + b"xyz" + ENVIRONMENT,
        [("frame", 0), ("garbage", 11, 3), ("frame", 14)],
    ),
    Case(
        "garbage inside a frame",
        POWER[:5] + b"\x00\x01" + POWER[5:] + ENVIRONMENT,
        # the header says 5 payload bytes: the candidate ends at 11, the 2 bytes after it
        # are garbage of their own
        [("bad_checksum", 0), ("garbage", 11, 2), ("frame", 13)],
    ),
    Case(
        "a lone first sync byte before a frame",
        b"\xaa" + POWER,
        [("garbage", 0, 1), ("frame", 1)],
    ),
    Case(
        "a bare sync pair in the garbage",
        b"\x10\xaa\x55\x20" + POWER,
        # the pair reads as cmd 0x20 with length 0x55AA, impossible; the byte before it
        # is garbage, reported first (offset order); the frame starts inside the header
        [("garbage", 0, 1), ("bad_length", 1), ("frame", 4)],
    ),
    Case(
        "a fake header with a plausible length",
        b"\xaa\x55\x10\x04\x00" + POWER + ENVIRONMENT,
        # the fake frame would end inside POWER; its checksum fails (0x29 vs 0x00)
        [("bad_checksum", 0), ("frame", 5), ("frame", 16)],
    ),
    Case(
        "a fake header with an impossible length",
        b"\xaa\x55\x10\xff\x7f" + POWER,
        [("bad_length", 0), ("frame", 5)],
    ),
    Case(
        "a fake header whose length covers several frames",
        b"\xaa\x55\x10\x1e\x00" + POWER + ENVIRONMENT + UNKNOWN + POWER,
        [
            ("bad_checksum", 0),
            ("frame", 5),
            ("frame", 16),
            ("frame", 30),
            ("frame", 39),
        ],
    ),
    Case(
        "a frame hidden in the payload of a corrupt frame",
        b"\xaa\x55\x12\x0b\x00" + POWER + b"\x00",
        # the last byte is the corrupt frame's checksum: part of its error, not garbage
        [("bad_checksum", 0), ("frame", 5)],
    ),
    Case(
        "sync bytes inside a payload",
        SYNC_IN_PAYLOAD + POWER,
        [("frame", 0), ("frame", 11)],
    ),
    Case(
        "a corrupted checksum, then a good frame",
        POWER[:-1] + b"\x00" + ENVIRONMENT,
        [("bad_checksum", 0), ("frame", 11)],
    ),
    Case(
        "a known command with the wrong payload length",
        bytes.fromhex("AA 55 12 03 00 01 02 03 1A") + ENVIRONMENT,
        [("payload_mismatch", 0), ("frame", 9)],
    ),
    Case(
        "a frame hidden in the payload of a known command of the wrong length",
        # 0x12 "power" has 5 payload bytes; this one claims 11 (POWER) and its sum matches
        b"\xaa\x55\x12\x0b\x00" + POWER + bytes([(0xFF + 0x12 + 0x0B + sum(POWER)) & 0xFF]),
        [("payload_mismatch", 0), ("frame", 5)],
    ),
    Case(
        "a fake header of an unknown command whose checksum matches: the documented loss",
        # cmd 0x7E is unknown; its 11-byte payload is POWER, and the sum matches by design.
        # Nothing can tell it from a real frame, so POWER inside it is not reported.
        b"\xaa\x55\x7e\x0b\x00" + POWER + bytes([(0xFF + 0x7E + 0x0B + sum(POWER)) & 0xFF]),
        [("frame", 0)],
    ),
    Case(
        "a truncated frame at the end",
        POWER + ENVIRONMENT[:8],
        [("frame", 0), ("truncated", 11)],
    ),
    Case(
        "a truncated header at the end",
        POWER + b"\xaa\x55\x10",
        [("frame", 0), ("truncated", 11)],
    ),
    Case(
        "a truncated fake frame hiding a complete one",
        b"\xaa\x55\x10\x40\x00" + POWER,
        # 64 payload bytes promised, 11 arrive: at the end, hunt again inside them
        [("truncated", 0), ("frame", 5)],
    ),
    Case("only garbage", b"\x00\x01\x02\x03", [("garbage", 0, 4)]),
    Case("nothing", b"", []),
    Case(
        "one-byte sync: sync bytes in the garbage",
        b"\xc3\x00\x01\xc3" + CRC_POWER + b"\xc3",
        # C3 00 01 C3 .. reads as length 1 (plausible) and fails its CRC; the lone C3
        # at offset 3 reads as length 0xC300 > 1024; the last C3 is cut off at the end
        [("bad_checksum", 0), ("bad_length", 3), ("frame", 4), ("truncated", 18)],
        profile="addressed-crc16",
    ),
    Case(
        "one-byte sync: back to back with a corrupted frame between",
        CRC_POWER + CRC_POWER[:9] + b"\xff" + CRC_POWER[10:] + CRC_POWER,
        [("frame", 0), ("bad_checksum", 14), ("frame", 28)],
        profile="addressed-crc16",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_resync_case(case: Case, default_schema: Schema, crc_schema: Schema) -> None:
    schema = crc_schema if case.profile == "addressed-crc16" else default_schema
    results = {name: decode(schema, chunks) for name, chunks in chunkings(case.stream).items()}
    assert summarise(results["whole"]) == case.expected
    for name, events in results.items():
        assert events == results["whole"], f"{name} differs from whole"


@pytest.mark.parametrize("cut", range(1, len(POWER + ENVIRONMENT)))
def test_a_frame_split_at_every_boundary(default_schema: Schema, cut: int) -> None:
    stream = POWER + ENVIRONMENT
    assert decode(default_schema, split(stream, [cut])) == decode(default_schema, [stream])


def test_nothing_is_emitted_before_a_frame_is_complete(default_schema: Schema) -> None:
    decoder = StreamDecoder(default_schema)
    for index in range(len(POWER) - 1):
        assert decoder.feed(POWER[index : index + 1]) == []
    [frame] = decoder.feed(POWER[-1:])
    assert isinstance(frame, Frame)
    assert frame.raw == POWER
