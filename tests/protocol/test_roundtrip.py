"""Property tests: the fast plans agree with construct, and encoding round-trips."""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.catalog import FieldType, MessageSpec
from protocol.config import load_catalog
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.errors import EncodeError
from protocol.events import Frame
from protocol.schema import Schema, load_schema
from tests.protocol.conftest import DATA

EVERY_FIELD = load_catalog(DATA / "every-field.toml")
DEFAULT = load_catalog()
MESSAGES = [("every-field", message) for message in EVERY_FIELD.messages] + [
    ("default", message) for message in DEFAULT.messages
]
MESSAGE_IDS = [f"{catalog}:{message.name}" for catalog, message in MESSAGES]


def normalised(value: Any) -> Any:
    """Make NaN comparable: NaN != NaN, but two decoders agreeing on NaN is agreement."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {key: normalised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalised(item) for item in value]
    return value


def padded(text: str, length: int) -> bytes:
    return text.encode().ljust(length, b"\0")


def valid_payloads(message: MessageSpec) -> st.SearchStrategy[bytes]:
    """Payloads whose every field holds a value the encoder can write back exactly."""
    parts: list[st.SearchStrategy[bytes]] = []
    for spec in message.fields:
        for _ in range(spec.count or 1):
            if spec.type is FieldType.STRING:
                length = spec.element_size()
                text = st.text(
                    st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=length
                )
                parts.append(text.map(functools.partial(padded, length=length)))
            else:
                size = spec.element_size()
                parts.append(st.binary(min_size=size, max_size=size))
    return st.tuples(*parts).map(b"".join)


def schema_for(catalog: str, every_field_schema: Schema, default_schema: Schema) -> Schema:
    return every_field_schema if catalog == "every-field" else default_schema


@pytest.mark.parametrize(("catalog", "message"), MESSAGES, ids=MESSAGE_IDS)
@settings(max_examples=150)
@given(data=st.data())
def test_plan_agrees_with_construct_on_any_payload(
    catalog: str,
    message: MessageSpec,
    every_field_schema: Schema,
    default_schema: Schema,
    data: st.DataObject,
) -> None:
    compiled = schema_for(catalog, every_field_schema, default_schema).messages[message.cmd]
    payload = data.draw(st.binary(min_size=message.size, max_size=message.size))
    reference = compiled.decode_with_construct(payload)
    fast = compiled.decoder()(b"\x00\x01" + payload, 2)
    assert normalised(fast) == normalised(reference)


def test_every_message_but_mixed_byte_orders_has_a_plan(every_field_schema: Schema) -> None:
    without_plan = [m.spec.name for m in every_field_schema.messages.values() if m.plan is None]
    assert without_plan == ["mixed_orders"]
    assert all(message.plan is not None for message in load_schema().messages.values())


@pytest.mark.parametrize(("catalog", "message"), MESSAGES, ids=MESSAGE_IDS)
@settings(max_examples=100)
@given(data=st.data())
def test_encoded_messages_decode_to_the_same_values(
    catalog: str,
    message: MessageSpec,
    every_field_schema: Schema,
    default_schema: Schema,
    data: st.DataObject,
) -> None:
    schema = schema_for(catalog, every_field_schema, default_schema)
    fields = schema.messages[message.cmd].decode_with_construct(data.draw(valid_payloads(message)))
    frame = FrameEncoder(schema).encode(message.name, fields)
    [event] = StreamDecoder(schema).feed(frame)
    assert isinstance(event, Frame)
    assert (event.cmd, event.message) == (message.cmd, message.name)
    assert normalised(event.fields) == normalised(fields)


@settings(max_examples=200)
@given(
    message=st.sampled_from(DEFAULT.messages),
    sequence=st.integers(0, 255),
    address=st.integers(0, 255),
    data=st.data(),
)
def test_second_profile_round_trip_and_construct_agree(
    crc_schema: Schema, message: MessageSpec, sequence: int, address: int, data: st.DataObject
) -> None:
    fields = crc_schema.messages[message.cmd].decode_with_construct(
        data.draw(valid_payloads(message))
    )
    frame = FrameEncoder(crc_schema).encode(
        message.name, fields, header={"sequence": sequence, "address": address}
    )
    [event] = StreamDecoder(crc_schema).feed(frame)
    assert isinstance(event, Frame)
    assert event.header == {"sequence": sequence, "address": address}
    reference = crc_schema.parse_frame_with_construct(frame)
    assert reference["sequence"] == sequence
    assert reference["address"] == address
    assert reference["cmd"] == event.cmd
    assert normalised(reference["fields"]) == normalised(event.fields) == normalised(fields)


@settings(max_examples=200)
@given(
    cmd=st.one_of(
        st.sampled_from([message.cmd for message in DEFAULT.messages]), st.integers(0, 0xFFFF)
    ),
    payload=st.one_of(st.binary(max_size=64), st.binary(min_size=5, max_size=8)),
)
def test_raw_frames_agree_with_construct(crc_schema: Schema, cmd: int, payload: bytes) -> None:
    frame = FrameEncoder(crc_schema).encode_raw(cmd, payload, header={"sequence": 1, "address": 2})
    event, *after = StreamDecoder(crc_schema).feed(frame)
    if isinstance(event, Frame):
        assert after == []
        reference = crc_schema.parse_frame_with_construct(frame)
        assert (event.cmd, event.payload) == (reference["cmd"], reference["payload"])
        assert normalised(event.fields) == normalised(reference.get("fields", {}))
    else:  # a known cmd with a payload of the wrong size
        assert event.kind == "payload_mismatch"
        assert len(payload) != crc_schema.messages[cmd].size


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
"""Whatever a client can send as a field's value in JSON."""


@pytest.mark.parametrize(("catalog", "message"), MESSAGES, ids=MESSAGE_IDS)
@settings(max_examples=60)
@given(data=st.data())
def test_any_json_field_value_encodes_or_is_an_encode_error(
    every_field_schema: Schema,
    default_schema: Schema,
    catalog: str,
    message: MessageSpec,
    data: st.DataObject,
) -> None:
    """A command's fields come from clients: a bad value is an EncodeError, never a crash."""
    encoder = FrameEncoder(schema_for(catalog, every_field_schema, default_schema))
    fields = {spec.name: data.draw(JSON_VALUES, label=spec.name) for spec in message.fields}
    with contextlib.suppress(EncodeError):  # anything else fails the test
        encoder.encode(message.name, fields)
