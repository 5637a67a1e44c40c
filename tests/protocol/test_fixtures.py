"""Literal frames, written out by hand, for both shipped profiles.

The bytes here were worked out from the frame layouts in the profile files, not
produced by the encoder, so a mistake shared by the encoder and the decoder shows.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import Frame
from protocol.schema import Schema

# Default profile: AA 55 | cmd | len u16le | payload | sum8 of everything before it.
DEFAULT_FIXTURES: list[tuple[str, str, str | None, dict[str, Any]]] = [
    (
        "power",
        # battery 3700 = 0x0E74, current -5 = 0xFFFB, charge 90 = 0x5A; sum 0x3EC -> EC
        "AA 55 12 05 00  74 0E  FB FF  5A  EC",
        "power",
        {"battery": 3700, "current": -5, "charge": 90},
    ),
    (
        "environment, scaled",
        # 2150 = 0x0866 (21.50 °C), 4000 = 0x0FA0 (40.00 %RH), 10132 = 0x2794 (1013.2 hPa)
        "AA 55 10 08 00  66 08  A0 0F  94 27 00 00  EF",
        "environment",
        {"temperature": 21.5, "humidity": 40.0, "pressure": 1013.2},
    ),
    (
        "heartbeat, enum and bits",
        # uptime 5, state 1 = running, flags 0b11001 = charging + link_quality 3, resets 2
        "AA 55 01 08 00  05 00 00 00  01  19  02 00  29",
        "heartbeat",
        {
            "uptime": 5,
            "state": "running",
            "flags": {
                "charging": True,
                "low_battery": False,
                "sensor_fault": False,
                "link_quality": 3,
            },
            "resets": 2,
        },
    ),
    (
        "event, enum and string",
        # code 2 = button; "hi" padded with NULs to 16 bytes; sum 0x204 -> 04
        "AA 55 20 12 00  02 00  68 69 00 00 00 00 00 00 00 00 00 00 00 00 00 00  04",
        "event",
        {"code": "button", "text": "hi"},
    ),
]

UNKNOWN_FIXTURES = [
    ("unknown cmd 0x99", "AA 55 99 03 00  61 62 63  C1", 0x99, b"abc"),
    ("unknown cmd 0x7F, empty payload", "AA 55 7F 00 00  7E", 0x7F, b""),
]

# addressed-crc16: C3 | len u16be | seq | addr | cmd u16be | payload | crc16-ccitt-false be,
# the CRC over len..payload.
CRC_FIXTURE = "C3  00 05  07  03  00 12  74 0E  EC FF  58  C5 ED"


def _crc16_ccitt_false(data: bytes) -> int:
    """Bit by bit, straight from the definition: poly 0x1021, init 0xFFFF, no reflection."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@pytest.mark.parametrize(
    ("hex_frame", "message", "fields"),
    [case[1:] for case in DEFAULT_FIXTURES],
    ids=[case[0] for case in DEFAULT_FIXTURES],
)
def test_default_profile_decodes_and_encodes_the_literal_frame(
    default_schema: Schema, hex_frame: str, message: str, fields: dict[str, Any]
) -> None:
    frame = bytes.fromhex(hex_frame)
    assert sum(frame[:-1]) & 0xFF == frame[-1], "the fixture itself is wrong"
    [event] = StreamDecoder(default_schema).feed(frame)
    assert isinstance(event, Frame)
    assert (event.offset, event.cmd, event.message, event.fields) == (0, frame[2], message, fields)
    assert event.raw == frame
    assert FrameEncoder(default_schema).encode(message, fields) == frame
    reference = default_schema.parse_frame_with_construct(frame)
    assert reference["fields"] == fields


@pytest.mark.parametrize(
    ("hex_frame", "cmd", "payload"),
    [case[1:] for case in UNKNOWN_FIXTURES],
    ids=[case[0] for case in UNKNOWN_FIXTURES],
)
def test_unknown_commands_are_frames_with_their_raw_payload(
    default_schema: Schema, hex_frame: str, cmd: int, payload: bytes
) -> None:
    frame = bytes.fromhex(hex_frame)
    decoder = StreamDecoder(default_schema)
    [event] = decoder.feed(frame)
    assert event == Frame(offset=0, cmd=cmd, message=None, fields={}, payload=payload, raw=frame)
    assert decoder.statistics().unknown_frames == 1
    assert FrameEncoder(default_schema).encode_raw(cmd, payload) == frame


def test_second_profile_decodes_and_encodes_the_literal_frame(crc_schema: Schema) -> None:
    frame = bytes.fromhex(CRC_FIXTURE)
    assert _crc16_ccitt_false(frame[1:-2]) == int.from_bytes(frame[-2:], "big")
    [event] = StreamDecoder(crc_schema).feed(frame)
    assert event == Frame(
        offset=0,
        cmd=0x12,
        message="power",
        fields={"battery": 3700, "current": -20, "charge": 88},
        payload=frame[7:-2],
        raw=frame,
        header={"sequence": 7, "address": 3},
    )
    fields = {"battery": 3700, "current": -20, "charge": 88}
    assert (
        FrameEncoder(crc_schema).encode("power", fields, header={"sequence": 7, "address": 3})
        == frame
    )


def test_second_profile_rejects_a_default_frame_and_vice_versa(
    default_schema: Schema, crc_schema: Schema
) -> None:
    default_frame = bytes.fromhex(DEFAULT_FIXTURES[0][1])
    crc_frame = bytes.fromhex(CRC_FIXTURE)
    for schema, foreign in ((crc_schema, default_frame), (default_schema, crc_frame)):
        decoder = StreamDecoder(schema)
        events = decoder.feed(foreign) + decoder.finish()
        assert not any(isinstance(event, Frame) for event in events)
        assert decoder.statistics().bytes_skipped == len(foreign)
