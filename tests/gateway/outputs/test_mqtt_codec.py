"""The MQTT 3.1.1 codec, byte by byte: packets written by hand from the specification.

The fixtures are hex typed from MQTT 3.1.1 (sections 3.1 to 3.14), not produced by the
encoder, so a bug shared by the encoder and the reader cannot hide. The reader gets the
same bytes whole, byte by byte and in random cuts and must say the same; whatever
garbage it gets, it parses or raises MqttProtocolError, never anything else.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.outputs import mqtt_codec
from gateway.outputs.mqtt_codec import (
    DISCONNECT,
    PINGREQ,
    Acknowledged,
    ConnAck,
    ConnectReturnCode,
    MqttProtocolError,
    Packet,
    PacketReader,
    PacketType,
    PingResp,
    Will,
    encode_connect,
    encode_publish,
    encode_pubrel,
)


def hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text)


# -- what the client sends ---------------------------------------------------------------


def test_connect_with_a_clean_session_and_nothing_else() -> None:
    assert encode_connect("tgw", keepalive=30) == hex_bytes(
        "10 0f"  # CONNECT, 15 bytes follow
        "00 04 4d 51 54 54 04"  # "MQTT", level 4 (3.1.1)
        "02"  # clean session
        "00 1e"  # keepalive 30 s
        "00 03 74 67 77"  # client id "tgw"
    )


def test_connect_with_a_retained_will_a_user_and_a_password() -> None:
    will = Will("t/s", b"offline", qos=1, retain=True)
    packet = encode_connect("tgw", keepalive=60, will=will, username="u", password="p")
    assert packet == hex_bytes(
        "10 23"
        "00 04 4d 51 54 54 04"
        "ee"  # user, password, will retain, will QoS 1, will, clean session
        "00 3c"
        "00 03 74 67 77"
        "00 03 74 2f 73"  # will topic "t/s"
        "00 07 6f 66 66 6c 69 6e 65"  # will payload "offline"
        "00 01 75"  # "u"
        "00 01 70"  # "p"
    )


def test_a_password_without_a_user_is_not_sent() -> None:
    assert encode_connect("tgw", keepalive=30, password="p") == encode_connect("tgw", keepalive=30)


@pytest.mark.parametrize(
    ("qos", "retain", "packet_id", "duplicate", "expected"),
    [
        (0, False, 0, False, "30 07 00 03 61 2f 62 68 69"),
        (1, True, 10, False, "33 09 00 03 61 2f 62 00 0a 68 69"),
        (2, False, 0x1234, True, "3c 09 00 03 61 2f 62 12 34 68 69"),
    ],
)
def test_publish(qos: int, retain: bool, packet_id: int, duplicate: bool, expected: str) -> None:
    packet = encode_publish(
        "a/b", b"hi", qos=qos, retain=retain, packet_id=packet_id, duplicate=duplicate
    )
    assert packet == hex_bytes(expected)


@pytest.mark.parametrize(
    ("payload_size", "length"),
    [
        (124, "7f"),  # 127: the largest in one byte
        (125, "80 01"),  # 128
        (16380, "ff 7f"),  # 16,383: the largest in two
        (16381, "80 80 01"),  # 16,384
        (2_097_149, "80 80 80 01"),  # 2,097,152: four bytes
    ],
)
def test_publish_remaining_length_at_each_boundary(payload_size: int, length: str) -> None:
    payload = b"x" * payload_size
    packet = encode_publish("a", payload, qos=0, retain=False)
    assert packet == b"\x30" + hex_bytes(length) + b"\x00\x01a" + payload


def test_pubrel_pingreq_disconnect() -> None:
    assert encode_pubrel(10) == hex_bytes("62 02 00 0a")
    assert hex_bytes("c0 00") == PINGREQ
    assert hex_bytes("e0 00") == DISCONNECT


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("", "an empty topic"),
        ("a/+/b", "has a wildcard"),
        ("a/#", "has a wildcard"),
        ("a\x00b", "has a NUL character"),
        ("x" * 65536, "has 65536 bytes; MQTT carries at most 65535"),
    ],
)
def test_a_topic_mqtt_cannot_publish_to_is_a_value_error(topic: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        encode_publish(topic, b"", qos=0, retain=False)


def test_a_qos_or_packet_id_out_of_range_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="QoS 3: MQTT has 0, 1 and 2"):
        encode_publish("a", b"", qos=3, retain=False, packet_id=1)
    with pytest.raises(ValueError, match="packet id 0: QoS 1 needs 1 to 65535"):
        encode_publish("a", b"", qos=1, retain=False)
    with pytest.raises(ValueError, match="packet id 65536"):
        encode_publish("a", b"", qos=2, retain=False, packet_id=65536)
    with pytest.raises(ValueError, match="keepalive of 65536 s"):
        encode_connect("tgw", keepalive=65536)


# -- what the broker sends ---------------------------------------------------------------


FIXTURES: list[tuple[str, str, Packet]] = [
    ("CONNACK accepted", "20 02 00 00", ConnAck(False, 0)),
    ("CONNACK refused, session present", "20 02 01 05", ConnAck(True, 5)),
    ("PUBACK", "40 02 00 01", Acknowledged(PacketType.PUBACK, (1,))),
    ("PUBREC", "50 02 ff ff", Acknowledged(PacketType.PUBREC, (65535,))),
    ("PUBCOMP", "70 02 01 00", Acknowledged(PacketType.PUBCOMP, (256,))),
    ("PINGRESP", "d0 00", PingResp()),
]


@pytest.mark.parametrize(("name", "data", "packet"), FIXTURES, ids=[f[0] for f in FIXTURES])
def test_each_packet_a_broker_sends(name: str, data: str, packet: Packet) -> None:
    assert PacketReader().feed(hex_bytes(data)) == [packet]


def test_a_read_of_acknowledgements_is_one_packet_per_run_of_a_kind() -> None:
    data = hex_bytes(
        "40 02 00 01  40 02 00 02  40 02 00 0350 02 00 04  50 02 00 05d0 0040 02 00 0670 02 00 04"
    )
    assert PacketReader().feed(data) == [
        Acknowledged(PacketType.PUBACK, (1, 2, 3)),
        Acknowledged(PacketType.PUBREC, (4, 5)),
        PingResp(),
        Acknowledged(PacketType.PUBACK, (6,)),
        Acknowledged(PacketType.PUBCOMP, (4,)),
    ]


def test_a_thousand_pubacks_in_one_read() -> None:
    data = b"".join(b"\x40\x02" + n.to_bytes(2, "big") for n in range(1, 1001))
    assert PacketReader().feed(data) == [Acknowledged(PacketType.PUBACK, tuple(range(1, 1001)))]


def test_a_packet_cut_short_waits_for_the_rest() -> None:
    reader = PacketReader()
    assert reader.feed(hex_bytes("40 02 00 01 40 02")) == [Acknowledged(PacketType.PUBACK, (1,))]
    assert reader.feed(hex_bytes("00")) == []
    assert reader.feed(hex_bytes("02 20")) == [Acknowledged(PacketType.PUBACK, (2,))]
    assert reader.feed(hex_bytes("02 00")) == []
    assert reader.feed(hex_bytes("00 d0")) == [ConnAck(False, 0)]
    assert reader.feed(hex_bytes("00")) == [PingResp()]


MALFORMED = [
    ("a PUBLISH", "30 07 00 03 61 2f 62 68 69", "a PUBLISH packet, which a client"),
    ("a SUBACK", "90 03 00 01 00", "a SUBACK packet"),
    ("a PUBREL", "62 02 00 01", "a PUBREL packet"),
    ("a CONNECT", "10", "a CONNECT packet"),
    ("reserved type 0", "00 00", "reserved type 0"),
    ("reserved type 15", "f0 00", "reserved type 15"),
    ("PUBACK with flags", "42 02 00 01", "PUBACK with flags 0x2"),
    ("PUBACK of 3 bytes", "40 03 00 01 00", "PUBACK with a remaining length of 3"),
    ("PUBACK of 4 bytes after a good one", "40 02 00 01 40 04", "remaining length of 4"),
    ("PUBCOMP of 0 bytes", "70 00", "PUBCOMP with a remaining length of 0"),
    ("CONNACK of 3 bytes", "20 03 00 00 00", "CONNACK with a remaining length of 3"),
    ("CONNACK flags", "20 02 02 00", "CONNACK with acknowledge flags 0x02"),
    ("PINGRESP of 1 byte", "d0 01 00", "PINGRESP with a remaining length of 1"),
    ("a long remaining length", "20 80 01", "CONNACK with a remaining length of over 127"),
]


@pytest.mark.parametrize(("name", "data", "problem"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_what_a_publishing_client_cannot_accept_is_a_protocol_error(
    name: str, data: str, problem: str
) -> None:
    with pytest.raises(MqttProtocolError, match=problem):
        PacketReader().feed(hex_bytes(data))


def test_connect_return_codes_say_why_in_words() -> None:
    assert ConnectReturnCode(5).reason == "not authorized"
    assert ConnectReturnCode(4).reason == "bad user name or password"


# -- the same packets however the reads cut them -----------------------------------------


def flat(packets: list[Packet]) -> list[tuple[str, int | bool | None]]:
    """One item per packet, acknowledgements one per packet identifier."""
    items: list[tuple[str, int | bool | None]] = []
    for packet in packets:
        match packet:
            case Acknowledged(kind=kind, packet_ids=ids):
                items += [(kind.name, i) for i in ids]
            case ConnAck(session_present=present, return_code=code):
                items.append(("CONNACK", code * 2 + present))
            case PingResp():
                items.append(("PINGRESP", None))
    return items


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[Packet]:
    reader = PacketReader()
    packets: list[Packet] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        packets += reader.feed(data[start:cut])
        start = max(start, cut)
    return packets


packet_bytes = st.one_of(
    st.sampled_from([0x40, 0x50, 0x70]).flatmap(
        lambda first: st.integers(1, 65535).map(lambda i: bytes((first, 2)) + i.to_bytes(2, "big"))
    ),
    st.just(b"\xd0\x00"),
    st.tuples(st.integers(0, 1), st.integers(0, 5)).map(lambda t: bytes((0x20, 2, *t))),
)


@settings(max_examples=200, deadline=None)
@given(packets=st.lists(packet_bytes, max_size=60), data=st.data())
def test_the_same_packets_whole_byte_by_byte_and_in_random_cuts(
    packets: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(packets)
    whole = PacketReader().feed(stream)
    assert len(flat(whole)) == len(packets)
    byte_by_byte = feed_in_pieces(stream, list(range(len(stream))))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert flat(byte_by_byte) == flat(whole)
    assert flat(feed_in_pieces(stream, cuts)) == flat(whole)


@settings(max_examples=500, deadline=None)
@given(chunks=st.lists(st.binary(max_size=40), max_size=8))
def test_garbage_parses_or_raises_a_protocol_error_and_nothing_else(
    chunks: list[bytes],
) -> None:
    reader = PacketReader()
    try:
        for chunk in chunks:
            reader.feed(chunk)
    except MqttProtocolError:
        pass


# -- Sans-I/O ----------------------------------------------------------------------------


def test_the_codec_imports_no_event_loop_socket_or_mqtt_library() -> None:
    path = Path(mqtt_codec.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported.isdisjoint({"asyncio", "socket", "ssl", "selectors", "paho", "aiomqtt"})
    check = (
        "import sys, gateway.outputs.mqtt_codec; "
        "print(sorted(m for m in ('asyncio', 'paho', 'aiomqtt') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
