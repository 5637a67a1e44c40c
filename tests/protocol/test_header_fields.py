"""Named header fields, end to end: profile, decoder, encoder and records.

The frames are written out by hand from tests/protocol/data/flagged.toml, not produced
by the encoder, so a mistake shared by the encoder and the decoder shows.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from protocol.config import load_catalog, load_profile
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.errors import EncodeError
from protocol.events import Frame
from protocol.records import RESERVED_KEYS, event_record
from protocol.schema import Schema, compile_schema
from tests.protocol.conftest import DATA
from tests.protocol.streams import chunkings, decode

# 7E | cmd | flags | len | component u16be | sequence | payload | xor8 after the sync
POWER = "7E  12  01  05  01 2C  07  74 0E FB FF 5A  18"
"""power (battery 3700, current -5, charge 90); flags 1, component 300, sequence 7.
xor: 12^01^05^01^2C^07 = 3C, ^74^0E^FB^FF^5A = 18."""
UNKNOWN = "7E  99  80  03  01 02  FF  61 62 63  86"
"""cmd 0x99 (not in the catalog), payload "abc"; flags 0x80, component 258, sequence 255.
xor: 99^80^03^01^02^FF = E6, ^61^62^63 = 86."""

POWER_FIELDS = {"battery": 3700, "current": -5, "charge": 90}
POWER_HEADER = {"flags": 1, "component": 300, "sequence": 7}
UNKNOWN_HEADER = {"flags": 0x80, "component": 0x0102, "sequence": 0xFF}


@pytest.fixture(scope="module")
def flagged_schema() -> Schema:
    return compile_schema(load_profile(DATA / "flagged.toml"), load_catalog())


def xor(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


@pytest.mark.parametrize("fixture", [POWER, UNKNOWN])
def test_the_fixtures_add_up(fixture: str) -> None:
    frame = bytes.fromhex(fixture)
    assert xor(frame[1:-1]) == frame[-1]
    assert frame[3] == len(frame) - 8  # sync, 6 header bytes, checksum


def test_named_fields_come_in_frame_header_in_profile_order(flagged_schema: Schema) -> None:
    power, unknown = bytes.fromhex(POWER), bytes.fromhex(UNKNOWN)
    stream = b"\x00" + power + unknown
    expected = [
        Frame(
            offset=1,
            cmd=0x12,
            message="power",
            fields=POWER_FIELDS,
            payload=power[7:-1],
            raw=power,
            header=POWER_HEADER,
        ),
        Frame(
            offset=1 + len(power),
            cmd=0x99,
            message=None,
            fields={},
            payload=b"abc",
            raw=unknown,
            header=UNKNOWN_HEADER,
        ),
    ]
    for name, chunks in chunkings(stream).items():
        frames = [event for event in decode(flagged_schema, chunks) if isinstance(event, Frame)]
        assert frames == expected, name
        assert [list(frame.header) for frame in frames] == [["flags", "component", "sequence"]] * 2


def test_the_encoder_builds_the_literal_frames(flagged_schema: Schema) -> None:
    encoder = FrameEncoder(flagged_schema)
    assert encoder.encode("power", POWER_FIELDS, header=POWER_HEADER) == bytes.fromhex(POWER)
    assert encoder.encode_raw(0x99, b"abc", header=UNKNOWN_HEADER) == bytes.fromhex(UNKNOWN)


def test_header_fields_not_given_are_zero(flagged_schema: Schema) -> None:
    frame = FrameEncoder(flagged_schema).encode("power", POWER_FIELDS, header={"flags": 1})
    [event] = StreamDecoder(flagged_schema).feed(frame)
    assert isinstance(event, Frame)
    assert event.header == {"flags": 1, "component": 0, "sequence": 0}


def test_construct_reads_the_named_fields_too(flagged_schema: Schema) -> None:
    reference = flagged_schema.parse_frame_with_construct(bytes.fromhex(POWER))
    assert {key: reference[key] for key in POWER_HEADER} == POWER_HEADER


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ({"flag": 1}, "no header field 'flag'"),
        ({"cmd": 3}, "no header field 'cmd'"),
        ({"length": 3}, "no header field 'length'"),
        ({"address": 3}, "no header field 'address'"),
        ({"component": 0x10000}, "component"),
        ({"flags": -1}, "flags"),
    ],
)
def test_bad_header_values_are_encode_errors(
    flagged_schema: Schema, header: dict[str, Any], problem: str
) -> None:
    with pytest.raises(EncodeError, match=problem):
        FrameEncoder(flagged_schema).encode("power", POWER_FIELDS, header=header)


def test_records_carry_header_fields_at_the_top_level(flagged_schema: Schema) -> None:
    [power, unknown] = StreamDecoder(flagged_schema).feed(
        bytes.fromhex(POWER) + bytes.fromhex(UNKNOWN)
    )
    assert list(event_record(power, 1.5).items()) == [
        ("type", "frame"),
        ("offset", 0),
        ("cmd", 0x12),
        ("message", "power"),
        ("fields", POWER_FIELDS),
        ("flags", 1),
        ("component", 300),
        ("sequence", 7),
        ("raw", bytes.fromhex(POWER).hex()),
        ("time", 1.5),
    ]
    record = event_record(unknown)
    assert list(record)[5:] == ["flags", "component", "sequence", "payload", "raw"]
    assert record["payload"] == "616263"


def test_the_readme_lists_the_names_a_header_field_may_not_take() -> None:
    readme = (DATA.parent.parent.parent / "README.md").read_text(encoding="utf-8")
    profiles = readme.split("## Profiles", 1)[1].split("\n## ", 1)[0]
    listed = profiles.split("use themselves (", 1)[1].split(")", 1)[0]
    assert set(re.findall(r"`(\w+)`", listed)) == RESERVED_KEYS
