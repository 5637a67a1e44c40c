"""MQTT 3.1.1 packets for a client that only publishes, without I/O.

The gateway's MQTT output sends CONNECT (with its will), PUBLISH, PUBREL, PINGREQ and
DISCONNECT, and reads CONNACK, PUBACK, PUBREC, PUBCOMP and PINGRESP: nothing else. The
``encode_*`` functions build the packets it sends (each raises ValueError, with numbers,
for what MQTT cannot carry); :class:`PacketReader` turns the bytes a broker sends into
packets, in order, whatever way they are cut. A run of acknowledgements of one kind is
one :class:`Acknowledged` with every packet identifier: a read of 400 PUBACKs is parsed
in one pass, not 400. Anything a publishing client cannot receive, or a malformed packet,
raises :class:`MqttProtocolError`, and nothing else: the connection is then unusable.

No asyncio, socket or paho here; the connection (mqtt_connection.py) feeds this.
Specification: MQTT Version 3.1.1, OASIS Standard, 29 October 2014.
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass

from protocol.errors import ProtocolError

__all__ = [
    "DISCONNECT",
    "MAX_PACKET_ID",
    "PINGREQ",
    "Acknowledged",
    "ConnAck",
    "ConnectReturnCode",
    "MqttProtocolError",
    "Packet",
    "PacketReader",
    "PacketType",
    "PingResp",
    "Will",
    "encode_connect",
    "encode_publish",
    "encode_pubrel",
]

MAX_PACKET_ID = 65535
MAX_REMAINING_LENGTH = 268_435_455
"""The largest remaining length four bytes can say (MQTT 3.1.1, 2.2.3)."""
MAX_STRING = 65535
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
_PROTOCOL = b"\x00\x04MQTT\x04"
"""Protocol name and level 4, which is 3.1.1 (3.1.2.1, 3.1.2.2)."""


class PacketType(enum.IntEnum):
    """The control packet types (2.2.1): the high four bits of the first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnectReturnCode(enum.IntEnum):
    """CONNACK's answer (3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5

    @property
    def reason(self) -> str:
        """In lower-case words: ``not authorized``."""
        return self.name.lower().replace("_", " ")


class MqttProtocolError(ProtocolError):
    """The broker sent what a publishing MQTT 3.1.1 client cannot accept."""


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes for the client when its connection dies."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class ConnAck:
    """The broker's answer to CONNECT: ``return_code`` 0 is accepted
    (:class:`ConnectReturnCode` says the others)."""

    session_present: bool
    return_code: int


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """Consecutive PUBACKs, PUBRECs or PUBCOMPs (``kind``): their packet identifiers,
    in the order they arrived."""

    kind: PacketType
    packet_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResp:
    """The broker answered a PINGREQ."""


Packet = ConnAck | Acknowledged | PingResp


# -- what the client sends ---------------------------------------------------------------


def encode_connect(
    client_id: str,
    *,
    keepalive: int,
    clean_session: bool = True,
    will: Will | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT (3.1). A ``password`` is sent only with a ``username`` (3.1.2.9)."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive of {keepalive} s: MQTT allows 0 to 65535")
    flags = 0x02 if clean_session else 0
    payload = [_string(client_id, "client id")]
    if will is not None:
        _check_qos(will.qos)
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
        payload += (_topic_field(will.topic), _binary(will.payload, "will payload"))
    if username is not None:
        flags |= 0x80
        payload.append(_string(username, "user name"))
        if password is not None:
            flags |= 0x40
            payload.append(_binary(password.encode(), "password"))
    body = b"".join((_PROTOCOL, bytes((flags,)), keepalive.to_bytes(2, "big"), *payload))
    return b"\x10" + _remaining_length(len(body)) + body


def encode_publish(
    topic: str,
    payload: bytes,
    *,
    qos: int,
    retain: bool,
    packet_id: int = 0,
    duplicate: bool = False,
) -> bytes:
    """PUBLISH (3.3); ``packet_id`` (1 to 65535) for QoS 1 and 2 only.

    Raise ValueError for a topic MQTT cannot publish to (empty, a wildcard, a NUL,
    over 65535 bytes) or a payload too large.
    """
    field = _topic_field(topic)
    if qos:
        if not 0 < packet_id <= MAX_PACKET_ID:
            raise ValueError(f"packet id {packet_id}: QoS {qos} needs 1 to {MAX_PACKET_ID}")
        _check_qos(qos)
        length = len(field) + 2 + len(payload)
        ident = packet_id.to_bytes(2, "big")
    else:
        length = len(field) + len(payload)
        ident = b""
    first = 0x30 | qos << 1 | (0x08 if duplicate else 0) | (0x01 if retain else 0)
    if length < 0x80:
        header = bytes((first, length))
    elif length < 0x4000:
        header = bytes((first, length & 0x7F | 0x80, length >> 7))
    else:
        header = bytes((first,)) + _remaining_length(length)
    return b"".join((header, field, ident, payload))


def encode_pubrel(packet_id: int) -> bytes:
    """PUBREL (3.6): the second step of a QoS 2 publish, after its PUBREC."""
    return b"\x62\x02" + packet_id.to_bytes(2, "big")


@functools.lru_cache(maxsize=1024)
def _topic_field(topic: str) -> bytes:
    """A topic name as PUBLISH carries it (3.3.2.1), its length first; cached: the
    gateway publishes to few topics, again and again."""
    if not topic:
        raise ValueError("an empty topic: MQTT needs at least one character")
    if "+" in topic or "#" in topic:
        raise ValueError(f"the topic {topic!r} has a wildcard (+ or #): only filters may")
    return _string(topic, "topic")


def _string(text: str, what: str) -> bytes:
    """A UTF-8 string with its length (1.5.3); no NUL, at most 65535 bytes."""
    if "\x00" in text:
        raise ValueError(f"the {what} {text!r} has a NUL character, which MQTT forbids")
    return _binary(text.encode(), what)


def _binary(data: bytes, what: str) -> bytes:
    if len(data) > MAX_STRING:
        raise ValueError(f"the {what} has {len(data)} bytes; MQTT carries at most {MAX_STRING}")
    return len(data).to_bytes(2, "big") + data


def _remaining_length(length: int) -> bytes:
    """The variable-length encoding of a remaining length (2.2.3)."""
    if length > MAX_REMAINING_LENGTH:
        raise ValueError(
            f"a packet of {length} bytes after its header: MQTT allows at most "
            f"{MAX_REMAINING_LENGTH}"
        )
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 0x80)
        if not length:
            encoded.append(digit)
            return bytes(encoded)
        encoded.append(digit | 0x80)


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS {qos}: MQTT has 0, 1 and 2")


# -- what the broker sends ---------------------------------------------------------------


_ACKNOWLEDGEMENTS = {
    0x40: PacketType.PUBACK,
    0x50: PacketType.PUBREC,
    0x70: PacketType.PUBCOMP,
}
"""First bytes of the acknowledgements, flags included (each has 0 there)."""
_PINGRESP = 0xD0
_CONNACK = 0x20
_RECEIVED = (
    PacketType.CONNACK,
    PacketType.PUBACK,
    PacketType.PUBREC,
    PacketType.PUBCOMP,
    PacketType.PINGRESP,
)


class PacketReader:
    """Turns the bytes a broker sends into packets, however the reads cut them.

    Every packet a publishing client can receive is at most four bytes long, so what
    waits for the rest of a packet is at most three bytes: the reader's memory is
    bounded whatever the broker sends.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[Packet]:
        """The packets that ``data`` completes, in order; the rest of a packet cut
        short waits for the next call. Raise :class:`MqttProtocolError` for anything
        else than CONNACK, PUBACK, PUBREC, PUBCOMP and PINGRESP, or a malformed one."""
        if self._pending:
            data = self._pending + data
            self._pending = b""
        packets: list[Packet] = []
        size = len(data)
        start = 0
        while start < size:
            first = data[start]
            kind = _ACKNOWLEDGEMENTS.get(first)
            if kind is not None:
                start = self._acknowledgements(data, start, kind, packets)
                continue
            if first not in (_PINGRESP, _CONNACK):
                raise MqttProtocolError(_unexpected(first))
            if start + 2 > size:
                self._pending = data[start:]
                break
            length = data[start + 1]
            if first == _PINGRESP:
                _expect_length(first, length, 0)
                packets.append(PingResp())
                start += 2
                continue
            _expect_length(first, length, 2)
            if start + 4 > size:
                self._pending = data[start:]
                break
            flags, code = data[start + 2], data[start + 3]
            if flags > 1:
                raise MqttProtocolError(
                    f"CONNACK with acknowledge flags 0x{flags:02x}: only bit 0 may be set"
                )
            packets.append(ConnAck(bool(flags), code))
            start += 4
        return packets

    def _acknowledgements(
        self, data: bytes, start: int, kind: PacketType, packets: list[Packet]
    ) -> int:
        """Read the run of ``kind`` acknowledgements at ``start``, all four bytes long
        (a first byte, length 2, a packet identifier); return where the run ends."""
        first = data[start]
        size = len(data)
        count = (size - start) // 4
        end = start + 4 * count
        if not (
            data[start:end:4] == bytes((first,)) * count
            and data[start + 1 : end : 4] == b"\x02" * count
        ):
            end = start  # mixed: packet by packet, up to the first of another kind
            while end + 4 <= size and data[end] == first and data[end + 1] == 2:
                end += 4
            count = (end - start) // 4
        if count:
            ids = struct.unpack(">" + "2xH" * count, data[start:end])
            if packets and isinstance(last := packets[-1], Acknowledged) and last.kind is kind:
                packets[-1] = Acknowledged(kind, last.packet_ids + ids)
            else:
                packets.append(Acknowledged(kind, ids))
            return end
        if end + 1 < size:  # a packet of this kind, but its length is not 2
            _expect_length(first, data[end + 1], 2)
        self._pending = data[end:]  # cut short: its end comes with the next read
        return size


def _expect_length(first: int, length: int, expected: int) -> None:
    if length != expected:
        name = PacketType(first >> 4).name
        said = f"{length}" if length < 0x80 else "over 127"
        raise MqttProtocolError(
            f"{name} with a remaining length of {said}; MQTT 3.1.1 says {expected}"
        )


def _unexpected(first: int) -> str:
    kind = first >> 4
    if kind in (0, 15):
        return f"a packet of reserved type {kind} (first byte 0x{first:02x})"
    name = PacketType(kind).name
    if kind in _RECEIVED:
        return f"{name} with flags 0x{first & 0x0F:x}, which MQTT 3.1.1 says are 0"
    return f"a {name} packet, which a client that only publishes never receives"
