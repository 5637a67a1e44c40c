"""The hex text parser: text in pieces, a line at a time, bytes out; and the sniffing."""

from __future__ import annotations

import codecs
import enum
import re
from typing import Protocol

from protocol.hextext.dump import OffsetLines, offset_style
from protocol.hextext.errors import DumpLayoutError, HexTextError
from protocol.hextext.logic import CsvRows, csv_columns
from protocol.hextext.tokens import QUOTE_LIMIT, ByteTokens, CArray, separated

__all__ = ["MAX_LINE", "HexTextParser", "looks_like_hex_text"]

MAX_LINE = 1 << 20
"""Characters a line may hold; only lines of bare byte tokens may run longer."""
_LINE_BREAK = re.compile(r"\r\n?|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def looks_like_hex_text(head: bytes) -> bool:
    """Guess from the first bytes of a file whether it is hex text rather than raw binary.

    ``head`` is the start of the file (a few KiB; it may end mid-line or mid-character).
    It is hex text when it is text (UTF-8, no NUL or control characters other than
    whitespace) and at least one line of bytes can be read from it in one of the layouts
    of docs/hex-input.md, before its end or its first unreadable line; a last line without
    a newline is left out, as it may be cut.

    So binary frame dumps (bytes such as ``AA 55`` are not valid UTF-8), random bytes and
    ``b""`` give False, as does text whose first data line is not hex (prose, a CSV
    without a data/value column). A dump whose first lines read but a later one does not
    (a ``*`` squeeze line, a lost line, a typo) gives True, and so does a dump that is
    unmistakably one but unreadable from its first line (the machine-order words of
    ``od -x``): parse it next, and report the :class:`HexTextError` the parser raises
    rather than decode the text as binary.
    """
    if not head or b"\x00" in head:
        return False
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    if _CONTROL.search(text):
        return False
    if not text.endswith(("\n", "\r")):
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1] or text
    parser = HexTextParser()
    found = False
    try:
        for line in (text + "\n").splitlines(keepends=True):  # each line's bytes on its own
            found = bool(parser.feed(line)) or found
        found = bool(parser.finish()) or found
    except DumpLayoutError:
        return True
    except HexTextError:
        pass
    return found


class HexTextParser:
    """Read hex text fed in pieces of any size; the layout is told by its first data line.

    :meth:`feed` returns the bytes of the lines the text completes, :meth:`finish` those
    of the last line and of anything held back; together they are the bytes the text
    shows, in order, however it was cut. A line that cannot be read raises
    :class:`HexTextError` naming it: the caller reports it and stops (the bytes of lines
    before it that the raising call had read are not returned).

    A line longer than ``max_line`` characters is an error naming it, unless it is a
    comment or holds bare byte tokens (continuous hex), which are read in pieces.
    """

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        if max_line < QUOTE_LIMIT:
            raise ValueError(f"max_line: expected {QUOTE_LIMIT} or more, got {max_line}")
        self._max_line = max_line
        self._started = False
        """Whether text came (a byte order mark may start the first)."""
        self._after_cr = False
        """Whether the text so far ends with CR, which a LF may complete."""
        self._number = 1
        """The number of the line being read."""
        self._partial: list[str] = []
        """The current line so far, not yet ended."""
        self._partial_size = 0
        self._long: _LongLine | None = None
        """How the current line is read once it is longer than ``max_line``."""
        self._reader: _Reader | None = None
        self._out = bytearray()

    def feed(self, text: str) -> bytes:
        """Read ``text``; return the bytes of the lines it completes. Raise HexTextError."""
        if not text:
            return b""
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        lines = _LINE_BREAK.split(text) if "\r" in text else text.split("\n")
        for index in range(len(lines) - 1):
            self._end_line(lines[index])
        self._extend_line(lines[-1])
        return self._take()

    def finish(self) -> bytes:
        """Read the last line (if no line break ended it); return what is left.

        Raise HexTextError if the text ends where it may not (an unclosed C array).
        """
        self._end_line("")
        if self._reader is not None:
            self._reader.finish(self._out)
        return self._take()

    def _take(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def _extend_line(self, text: str) -> None:
        if not text or (self._reader is not None and self._reader.closed):
            return
        if self._long is not None:
            self._long_text(text, end=False)
            return
        self._partial.append(text)
        self._partial_size += len(text)
        if self._partial_size > self._max_line:
            self._start_long(end=False)

    def _end_line(self, text: str) -> None:
        if self._reader is not None and self._reader.closed:
            return
        if self._long is not None:
            self._long_text(text, end=True)
        elif self._partial_size + len(text) > self._max_line:
            self._partial.append(text)
            self._start_long(end=True)
        else:
            if self._partial:
                self._partial.append(text)
                text = "".join(self._partial)
            self._line(text)
        self._number += 1
        self._partial = []
        self._partial_size = 0
        self._long = None

    def _line(self, line: str) -> None:
        """Read one whole line of at most ``max_line`` characters."""
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "//")):
            return
        if self._reader is None:
            self._reader = _reader_for(self._number, line, self._max_line)
            if isinstance(self._reader, CsvRows):
                return  # the first line was its header
        self._reader.read(self._number, line, self._out)

    def _start_long(self, *, end: bool) -> None:
        """The current line outgrew ``max_line``: tell how to read it from its beginning."""
        text = "".join(self._partial)
        self._partial = []
        self._partial_size = 0
        head = text[: self._max_line]
        if head.lstrip().startswith(("#", "//")):
            self._long = _LongLine.SKIP
            return
        if self._reader is None and head.strip():
            # Told by whole tokens: the head up to its last separator, if it has one.
            cut = separated(head)
            self._reader = _reader_for(self._number, head[: cut or None], self._max_line)
        if not isinstance(self._reader, ByteTokens):
            raise HexTextError(
                self._number,
                f"longer than {self._max_line} characters, the most a line may hold "
                "unless it holds only byte tokens",
            )
        self._long = _LongLine.TOKENS
        self._long_text(text, end=end)

    def _long_text(self, text: str, *, end: bool) -> None:
        if self._long is not _LongLine.TOKENS:
            return
        assert isinstance(self._reader, ByteTokens)
        self._partial.append(text)
        self._partial_size += len(text)
        if not end and self._partial_size <= self._max_line:
            return
        rest = self._reader.read_piece(self._number, "".join(self._partial), self._out, end=end)
        if rest is None:
            self._long = _LongLine.SKIP
            rest = ""
        self._partial = [rest]
        self._partial_size = len(rest)


class _LongLine(enum.Enum):
    """How the rest of a line longer than ``max_line`` is read."""

    SKIP = "skip"
    """Not at all: a comment, or past the ``|`` of an ASCII column."""
    TOKENS = "tokens"
    """As byte tokens, in pieces."""


class _Reader(Protocol):
    """How the data lines of one layout are read, after the first told the layout."""

    closed: bool
    """Whether the text after the lines read is to be ignored."""

    def read(self, number: int, line: str, out: bytearray) -> None:
        """Append the bytes of data line ``number`` to ``out``; raise HexTextError."""

    def finish(self, out: bytearray) -> None:
        """The text ended: append what is held back; raise HexTextError if it may not end."""


def _reader_for(number: int, line: str, max_line: int) -> _Reader:
    """The reader of the layout that the first data line (number ``number``) shows."""
    if (colon := offset_style(line)) is not None:
        return OffsetLines(number, colon=colon)
    if "{" in line:
        return CArray(number)
    if (columns := csv_columns(line)) is not None:
        return CsvRows(columns, max_line)
    return ByteTokens(max_line)
