"""Reading dumps: capture files, raw binary dumps and hex text, told apart by their content.

Everywhere a dump is read (``tgw decode``, ``tgw replay``, ``tgw check``) it goes
through :func:`open_dump`, which recognises the form from the first bytes:

- a capture (:mod:`protocol.capture`): it begins with ``TGWCAP``;
- hex text, as terminals, ``xxd``, ``hexdump -C``, ``od`` and logic analysers print it
  (:mod:`protocol.hextext`);
- anything else is a raw binary dump (``cat /dev/ttyUSB0 > dump.bin``), as is a serial
  port or PTY read live.

``--input-format`` overrides the guess. Every form reads as the same records
(:class:`protocol.capture.CaptureRecord`); raw and hex dumps have no receive times
(:attr:`Dump.timed` is False). :func:`decode_dump` turns them into the JSON-ready
records ``tgw decode`` prints.
"""

from __future__ import annotations

import codecs
import enum
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from gateway.ports import DEFAULT_BAUD, is_device, open_device, read_some
from protocol.capture import (
    MAGIC,
    CaptureFormatError,
    CaptureHeader,
    CaptureParser,
    CaptureRecord,
    RecordKind,
    Truncation,
)
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError, os_error_reason
from protocol.hextext import HexTextError, HexTextParser, looks_like_hex_text
from protocol.records import event_record

__all__ = ["Dump", "DumpFormat", "InputError", "decode_dump", "open_dump"]

READ_SIZE = 65536
HEAD_SIZE = 4096
"""Bytes looked at to recognise a dump's form."""


class InputError(GatewayError):
    """A dump cannot be opened, read or understood. ``str()`` names the file and the problem."""


class DumpFormat(enum.StrEnum):
    """The forms a dump can take; ``auto`` recognises them."""

    AUTO = "auto"
    CAPTURE = "capture"
    RAW = "raw"
    HEX = "hex"


@dataclass
class Dump:
    """An open dump. Iterate :meth:`records` once, then look at :attr:`truncation`; close it.

    ``consumed`` grows as the records are read (bytes of the file), for progress bars;
    ``size`` is the file's size when it has one (None for a pipe or a port).
    """

    name: str
    format: DumpFormat
    header: CaptureHeader | None
    size: int | None
    _file: BinaryIO
    _head: bytes
    _is_tty: bool
    consumed: int = 0
    truncation: Truncation | None = None
    _closed: bool = field(default=False, repr=False)
    _parser: CaptureParser = field(default_factory=CaptureParser, repr=False)
    """A capture's parser: :func:`_read_header` starts it, :meth:`records` goes on with it."""
    _parsed: list[CaptureRecord] = field(default_factory=list, repr=False)
    """Records completed while the header was read, not yet yielded."""

    @property
    def timed(self) -> bool:
        """Whether records carry receive times (captures do; raw and hex dumps do not)."""
        return self.format is DumpFormat.CAPTURE

    def records(self) -> Iterator[CaptureRecord]:
        """The dump's contents as records, in order. Raise InputError if it cannot be read."""
        try:
            match self.format:
                case DumpFormat.CAPTURE:
                    yield from self._capture_records()
                case DumpFormat.HEX:
                    yield from self._hex_records()
                case _:
                    yield from self._raw_records()
        except CaptureFormatError as exc:
            raise InputError(f"{self.name}: {exc}") from exc

    def close(self) -> None:
        """Close the file (not stdin)."""
        if not self._closed and self._file is not sys.stdin.buffer:
            self._file.close()
        self._closed = True

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _chunks(self) -> Iterator[bytes]:
        if self._head:
            self.consumed += len(self._head)
            yield self._head
        while chunk := self._read():
            self.consumed += len(chunk)
            yield chunk

    def _read(self) -> bytes:
        """What is available (a port gives what has arrived); b"" at the end."""
        try:
            return read_some(self._file, READ_SIZE, terminal=self._is_tty)
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read: {os_error_reason(exc)}") from exc

    def _raw_records(self) -> Iterator[CaptureRecord]:
        for chunk in self._chunks():
            yield CaptureRecord(RecordKind.DATA, 0, chunk)

    def _hex_records(self) -> Iterator[CaptureRecord]:
        """The bytes hex text shows, a record for each chunk read (a line at a time in memory).

        A line that cannot be read ends the records with InputError; the bytes of the
        lines before it are yielded by then, but for those read in the same chunk.
        """
        utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        parser = HexTextParser()
        try:
            for chunk in self._chunks():
                if data := parser.feed(utf8.decode(chunk)):
                    yield CaptureRecord(RecordKind.DATA, 0, data)
            data = parser.feed(utf8.decode(b"", final=True)) + parser.finish()
        except HexTextError as exc:
            raise InputError(f"{self.name}: not readable as hex text: {exc}") from exc
        if data:
            yield CaptureRecord(RecordKind.DATA, 0, data)

    def _capture_records(self) -> Iterator[CaptureRecord]:
        parser = self._parser
        self.consumed = len(self._head)
        yield from self._parsed
        self._parsed = []
        while chunk := self._read():
            self.consumed += len(chunk)
            yield from parser.feed(chunk)
        self.truncation = parser.finish()


def open_dump(name: str, form: DumpFormat = DumpFormat.AUTO, *, baud: int = DEFAULT_BAUD) -> Dump:
    """Open ``name`` (``-`` is stdin) and recognise its form; raise InputError if it fails.

    A capture's header is read at once, so :attr:`Dump.header` says which source,
    profile and catalog it holds before the records are read. A serial port or PTY
    named by ``name`` is put in raw mode at ``baud`` (:mod:`gateway.ports`).
    """
    file: BinaryIO
    if name == "-":
        file = sys.stdin.buffer
    elif is_device(name):
        file = open_device(name, baud=baud)
    else:
        try:
            file = open(name, "rb")  # noqa: SIM115 - the Dump owns it
        except OSError as exc:
            raise InputError(f"{name}: cannot open: {os_error_reason(exc)}") from exc
    try:
        return _recognise(name, file, form)
    except BaseException:
        if file is not sys.stdin.buffer:
            file.close()
        raise


def _recognise(name: str, file: BinaryIO, form: DumpFormat) -> Dump:
    try:
        is_tty = file.isatty()
        status = os.fstat(file.fileno())
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {os_error_reason(exc)}") from exc
    size = status.st_size if stat.S_ISREG(status.st_mode) else None
    if stat.S_ISDIR(status.st_mode):
        raise InputError(f"{name}: is a directory, not a dump")
    dump = Dump(name, form, None, size, file, b"", is_tty)
    if is_tty and form is DumpFormat.AUTO:  # a live port: raw bytes, read as they come
        dump.format = DumpFormat.RAW
        return dump
    head = b""
    while len(head) < HEAD_SIZE and (chunk := dump._read()):
        head += chunk
        if size is None:  # a pipe: decide on what came first, do not wait for more
            break
    dump._head = head
    if form is DumpFormat.AUTO:
        if head.startswith(MAGIC[:6]):
            dump.format = DumpFormat.CAPTURE
        elif looks_like_hex_text(head):
            dump.format = DumpFormat.HEX
        else:
            dump.format = DumpFormat.RAW
    if dump.format is DumpFormat.CAPTURE:
        dump.header = _read_header(dump)
    return dump


def _read_header(dump: Dump) -> CaptureHeader:
    """Read on until the capture's header is complete; keep the records after it for later."""
    parser = dump._parser
    head = dump._head
    try:
        dump._parsed = parser.feed(head)
        while parser.header is None:
            chunk = dump._read()
            if not chunk:
                truncation = parser.finish()
                have = truncation.have if truncation else len(head)
                raise InputError(
                    f"{dump.name}: truncated: the capture ends inside its header "
                    f"({have} bytes); nothing to read"
                )
            head += chunk
            dump._parsed = parser.feed(chunk)
    except CaptureFormatError as exc:
        raise InputError(f"{dump.name}: {exc}") from exc
    dump._head = head  # counted as consumed when the records are read
    return parser.header


def decode_dump(dump: Dump, decoder: StreamDecoder) -> Iterator[list[dict[str, Any]]]:
    """Decode ``dump``'s records; yield the JSON-ready records of each batch of events.

    A gap in a capture (bytes the gateway could not record) ends the frame in progress,
    as does a link that closed, so that no frame is spliced from both sides; the gap
    itself is a record ``{"type": "gap", "offset", "size"}``. Frames and errors from a
    capture carry the ``time`` their last bytes were read.
    """
    for item in dump.records():
        time = item.time if dump.timed else None
        match item.kind:
            case RecordKind.DATA:
                records = [event_record(event, time) for event in decoder.feed(item.data)]
            case RecordKind.GAP:
                records = [event_record(event, time) for event in decoder.finish()]
                gap: dict[str, Any] = {
                    "type": "gap",
                    "offset": decoder.statistics().bytes_fed,
                    "size": item.lost,
                }
                if time is not None:
                    gap["time"] = time
                records.append(gap)
            case RecordKind.CLOSED:
                records = [event_record(event, time) for event in decoder.finish()]
            case _:
                continue
        if records:
            yield records
    if final := [event_record(event) for event in decoder.finish()]:
        yield final
