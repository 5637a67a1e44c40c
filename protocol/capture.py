"""Capture files: every byte a source read, with its receive time. Format version 1.

A capture is what ``tgw run`` records when capture is on, and what ``tgw decode``,
``tgw replay`` and ``tgw check`` read back; the format is in docs/capture-format.md.
This module is Sans-I/O: :func:`file_header` and :func:`record` build bytes,
:class:`CaptureParser` takes bytes in any chunking and returns records; a file cut short
ends inside a record, and :meth:`CaptureParser.finish` says how much is missing.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from protocol.errors import ProtocolError

__all__ = [
    "EXTENSION",
    "FORMAT_VERSION",
    "MAGIC",
    "CaptureFormatError",
    "CaptureHeader",
    "CaptureParser",
    "CaptureRecord",
    "RecordKind",
    "Truncation",
    "file_header",
    "record",
]

MAGIC = b"TGWCAP\r\n"
FORMAT_VERSION = 1
EXTENSION = ".tgwcap"

_VERSION = struct.Struct("<HI")
_RECORD = struct.Struct("<BqI")
_GAP = struct.Struct("<Q")
MAX_HEADER = 1 << 20
"""Largest JSON header a reader accepts: a bigger one means the file is not a capture."""
MAX_RECORD = 1 << 26
"""Largest record body a reader accepts (a read is at most a few KiB to a MiB)."""


class CaptureFormatError(ProtocolError):
    """The bytes are not a capture this version can read. ``str()`` says where and why."""


class RecordKind(enum.IntEnum):
    """What a record holds."""

    DATA = 1
    GAP = 2
    OPENED = 3
    CLOSED = 4


class CaptureRecord(NamedTuple):
    """One record. ``data`` holds the bytes read (DATA) or the reason text (OPENED, CLOSED);
    ``lost`` the bytes not captured (GAP)."""

    kind: RecordKind
    time_ns: int
    data: bytes = b""
    lost: int = 0

    @property
    def time(self) -> float:
        """The receive time in Unix seconds."""
        return self.time_ns / 1e9

    @property
    def text(self) -> str:
        """The body of an OPENED or CLOSED record, as text."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class CaptureHeader:
    """Where a capture's bytes came from, and how to decode them."""

    source: str
    """The device's name in the gateway's configuration."""
    profile: str
    catalog: str
    kind: str = "serial"
    where: str = ""
    part: int = 1
    """1 for a capture's first file; rotation numbers the next ones 2, 3, ..."""
    created: float = 0.0
    gateway: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know, kept as they were."""

    def to_json(self) -> dict[str, Any]:
        """The header as the file stores it."""
        known = {
            "source": self.source,
            "kind": self.kind,
            "where": self.where,
            "profile": self.profile,
            "catalog": self.catalog,
            "part": self.part,
            "created": self.created,
            "gateway": self.gateway,
        }
        return {**self.extra, **known}

    @classmethod
    def from_json(cls, value: Any) -> CaptureHeader:
        """Read a header; raise CaptureFormatError naming the key that is missing or wrong."""
        if not isinstance(value, dict):
            raise CaptureFormatError("header: expected a JSON object")
        strings = ("source", "profile", "catalog")
        for key in strings:
            if not isinstance(value.get(key), str) or not value[key]:
                raise CaptureFormatError(f"header: {key!r}: expected a non-empty string")
        part = value.get("part", 1)
        created = value.get("created", 0.0)
        if not isinstance(part, int) or isinstance(part, bool) or part < 1:
            raise CaptureFormatError(f"header: 'part': expected an integer >= 1, got {part!r}")
        if not isinstance(created, int | float) or isinstance(created, bool):
            raise CaptureFormatError(f"header: 'created': expected a number, got {created!r}")
        known = {"source", "kind", "where", "profile", "catalog", "part", "created", "gateway"}
        return cls(
            source=value["source"],
            profile=value["profile"],
            catalog=value["catalog"],
            kind=str(value.get("kind", "serial")),
            where=str(value.get("where", "")),
            part=part,
            created=float(created),
            gateway=str(value.get("gateway", "")),
            extra={key: item for key, item in value.items() if key not in known},
        )


class Truncation(NamedTuple):
    """A capture that ends inside its header or a record: what was missing, and where."""

    offset: int
    """File offset where the incomplete part begins."""
    have: int
    need: int
    """Bytes present of it, and bytes it should have had (header: at least that many)."""

    def describe(self) -> str:
        """One line for an operator."""
        return (
            f"truncated at byte {self.offset}: the last record is incomplete "
            f"({self.have} of {self.need} bytes); what precedes it was read"
        )


def file_header(header: CaptureHeader) -> bytes:
    """The bytes a capture file starts with. Write them, then :func:`record` for each event."""
    text = json.dumps(header.to_json(), separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + _VERSION.pack(FORMAT_VERSION, len(text)) + text


def record(kind: RecordKind, time_ns: int, body: bytes | str | int = b"") -> bytes:
    """One record's bytes: ``body`` is the data (DATA), reason text (OPENED, CLOSED) or the
    count of bytes lost (GAP)."""
    if kind is RecordKind.GAP:
        if not isinstance(body, int):
            raise TypeError("a gap record's body is the count of bytes lost")
        payload = _GAP.pack(body)
    elif isinstance(body, str):
        payload = body.encode()
    elif isinstance(body, bytes | bytearray | memoryview):
        payload = bytes(body)
    else:
        raise TypeError(f"a {kind.name.lower()} record's body is bytes or text")
    return _RECORD.pack(kind, time_ns, len(payload)) + payload


class CaptureParser:
    """Read a capture from bytes fed in any chunking.

    Feed the file's bytes to :meth:`feed`; the first call that completes the header sets
    :attr:`header`. Each call returns the records it completed. Call :meth:`finish` at
    the end: it returns None, or a :class:`Truncation` when the file stopped mid-record.
    Anything that cannot be a capture raises :class:`CaptureFormatError` with its offset.
    """

    def __init__(self) -> None:
        self.header: CaptureHeader | None = None
        self._buffer = b""
        self._offset = 0
        """File offset of ``_buffer[0]``."""

    def feed(self, data: bytes) -> list[CaptureRecord]:
        """Add the next bytes of the file; return the records they complete."""
        buffer = self._buffer + data if self._buffer else bytes(data)
        position = 0
        if self.header is None:
            position = self._parse_header(buffer)
            if self.header is None:
                self._buffer = buffer
                return []
        records: list[CaptureRecord] = []
        size = len(buffer)
        unpack = _RECORD.unpack_from
        while size - position >= _RECORD.size:
            kind, time_ns, length = unpack(buffer, position)
            where = self._offset + position
            if kind not in _KINDS:
                raise CaptureFormatError(f"byte {where}: unknown record kind {kind}")
            if length > MAX_RECORD:
                raise CaptureFormatError(
                    f"byte {where}: a record of {length} bytes (at most {MAX_RECORD}): "
                    "the file is damaged"
                )
            end = position + _RECORD.size + length
            if end > size:
                break
            body = buffer[position + _RECORD.size : end]
            if kind == RecordKind.GAP:
                if length != _GAP.size:
                    raise CaptureFormatError(f"byte {where}: a gap record of {length} bytes")
                records.append(CaptureRecord(RecordKind.GAP, time_ns, lost=_GAP.unpack(body)[0]))
            else:
                records.append(CaptureRecord(_KINDS[kind], time_ns, body))
            position = end
        self._buffer = buffer[position:]
        self._offset += position
        return records

    def finish(self) -> Truncation | None:
        """Say whether the file ended mid-header or mid-record (and how), or cleanly (None)."""
        buffer = self._buffer
        if self.header is None:
            need = len(MAGIC) + _VERSION.size
            if len(buffer) >= need:
                need += int(_VERSION.unpack_from(buffer, len(MAGIC))[1])
            return Truncation(0, len(buffer), need)
        if not buffer:
            return None
        need = _RECORD.size
        if len(buffer) >= _RECORD.size:
            need += int(_RECORD.unpack_from(buffer)[2])
        return Truncation(self._offset, len(buffer), need)

    def _parse_header(self, buffer: bytes) -> int:
        """Set :attr:`header` if ``buffer`` holds it all; return where the records begin."""
        if buffer[: len(MAGIC)] != MAGIC[: len(buffer)]:
            raise CaptureFormatError(
                f"not a tgw capture: it does not begin with {MAGIC!r}"
                + (" (its line endings were converted?)" if buffer.startswith(b"TGWCAP") else "")
            )
        fixed = len(MAGIC) + _VERSION.size
        if len(buffer) < fixed:
            return 0
        version, length = (int(value) for value in _VERSION.unpack_from(buffer, len(MAGIC)))
        if version != FORMAT_VERSION:
            raise CaptureFormatError(
                f"capture format version {version}; this tgw reads version {FORMAT_VERSION}"
            )
        if length > MAX_HEADER:
            raise CaptureFormatError(f"a header of {length} bytes: the file is damaged")
        if len(buffer) < fixed + length:
            return 0
        try:
            value = json.loads(buffer[fixed : fixed + length])
        except ValueError as exc:
            raise CaptureFormatError(f"header: not valid JSON ({exc})") from exc
        self.header = CaptureHeader.from_json(value)
        return fixed + length


_KINDS = {int(kind): kind for kind in RecordKind}
