"""The envelope's JSON, byte for byte, and header fields in it and in tgw decode's records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.runtime.envelope import Envelope
from protocol.config import load_catalog, load_profile
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import Frame
from protocol.schema import Schema, compile_schema

TGW = Path(sys.executable).parent / "tgw"
FLAGGED = Path(__file__).parents[2] / "protocol" / "data" / "flagged.toml"
POWER = {"battery": 3700, "current": -5, "charge": 90}
FIELDS = '"fields":{"battery":3700,"current":-5,"charge":90}'
HEAD = '{"type":"message","seq":42,"device":"node-1"'


def decoded(schema: Schema, data: bytes) -> Frame:
    [frame] = StreamDecoder(schema).feed(data)
    assert isinstance(frame, Frame)
    return frame


def envelope_json(frame: Frame, *, include_raw: bool) -> str:
    envelope = Envelope("node-1", frame, received=1764063421.5, seq=42, include_raw=include_raw)
    return envelope.to_json().decode()


@pytest.mark.parametrize("include_raw", [False, True])
def test_default_profile(default_schema: Schema, include_raw: bool) -> None:
    frame = decoded(default_schema, FrameEncoder(default_schema).encode("power", POWER))
    raw = ',"raw":"aa55120500740efbff5aec"' if include_raw else ""
    assert envelope_json(frame, include_raw=include_raw) == (
        f'{HEAD},"message":"power","cmd":18,"time":1764063421.5,{FIELDS}{raw}}}'
    )


def test_sequence_and_address_follow_the_fields(crc_schema: Schema) -> None:
    data = FrameEncoder(crc_schema).encode("power", POWER, header={"sequence": 7, "address": 3})
    assert envelope_json(decoded(crc_schema, data), include_raw=True) == (
        f'{HEAD},"message":"power","cmd":18,"time":1764063421.5,{FIELDS},'
        '"sequence":7,"address":3,"raw":"c3000507030012740efbff5a235c"}'
    )


def test_an_unknown_command_has_a_null_message_and_no_payload(default_schema: Schema) -> None:
    frame = decoded(default_schema, FrameEncoder(default_schema).encode_raw(0x99, b"abc"))
    assert envelope_json(frame, include_raw=False) == (
        f'{HEAD},"message":null,"cmd":153,"time":1764063421.5,"fields":{{}}}}'
    )


def test_named_header_fields_are_at_the_top_level() -> None:
    schema = compile_schema(load_profile(FLAGGED), load_catalog())
    header = {"flags": 1, "component": 300, "sequence": 7}
    frame = decoded(schema, FrameEncoder(schema).encode("power", POWER, header=header))
    assert envelope_json(frame, include_raw=False) == (
        f'{HEAD},"message":"power","cmd":18,"time":1764063421.5,{FIELDS},'
        '"flags":1,"component":300,"sequence":7}'
    )


def test_tgw_decode_prints_named_header_fields(tmp_path: Path) -> None:
    frame = bytes.fromhex("7E 12 01 05 01 2C 07 74 0E FB FF 5A 18")  # test_header_fields.py
    dump = tmp_path / "dump.bin"
    dump.write_bytes(frame)
    result = subprocess.run(
        [TGW, "decode", dump, "--profile", FLAGGED], capture_output=True, check=True
    )
    [record] = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert record == {
        "type": "frame",
        "offset": 0,
        "cmd": 0x12,
        "message": "power",
        "fields": POWER,
        "flags": 1,
        "component": 300,
        "sequence": 7,
        "raw": frame.hex(),
    }
