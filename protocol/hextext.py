"""Hex text back into bytes: captures printed by terminals, hex dumpers and logic analysers.

Ask :func:`looks_like_hex_text` about the first few KiB of a file; if it says yes, feed
the text to a :class:`HexTextParser` as it is read and hand the bytes it returns to the
decoder::

    parser = HexTextParser()
    for text in chunks:  # str, cut anywhere
        decoder.feed(parser.feed(text))  # raises HexTextError naming the line
    decoder.feed(parser.finish())

The parser keeps at most one line (and the lines of one logic analyser CSV row) whatever
the size of the text, and its work grows linearly with the text. The layouts it reads
(``xxd``, ``hexdump -C``, ``od``, C arrays, continuous hex, Saleae CSV exports), how it
tells them apart and what it refuses are described in docs/hex-input.md.
"""

from __future__ import annotations

import codecs
import csv
import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from protocol.errors import ProtocolError

__all__ = ["MAX_LINE", "HexTextError", "HexTextParser", "looks_like_hex_text"]

MAX_LINE = 1 << 20
"""Characters a line may hold; only lines of bare byte tokens may run longer."""


class HexTextError(ProtocolError):
    """Text that looks like a hex dump but cannot be read as one.

    ``str(error)`` is one line, ``"line N: <what is wrong>"``, quoting the offending token,
    ready to print to an operator as it is. ``line`` is 1-based.
    """

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


class _DumpLayoutError(HexTextError):
    """A problem that only a hex dump can have: the text is one, even if its first line fails."""


_HEX = "0-9A-Fa-f"
_BYTE_TOKEN = rf"(?:0[xX][{_HEX}]{{1,2}}|(?:[{_HEX}]{{2}})+)"
_DATA_AREA = re.compile(rf"[\s,]*(?:{_BYTE_TOKEN}(?:[\s,]+|\Z))*", re.ASCII)
"""Byte tokens separated by whitespace and/or commas; matched whole (``fullmatch``)."""
_SEPARATORS = re.compile(r"[\s,]+", re.ASCII)
_SEPARATOR_CHARS = " \t\v\f,"
"""What ``_SEPARATORS`` matches within a line."""
_OX_TOKEN = re.compile(rf"0[xX][{_HEX}]*")
_OX_SHORT = re.compile(rf"0[xX]([{_HEX}])(?![{_HEX}])")
_OX_PREFIX = re.compile(r"0[xX]")
_HEX_RUN = re.compile(rf"[{_HEX}]+")
_WIDE_GROUP = re.compile(rf"[{_HEX}]{{3,}}")
_OFFSET = re.compile(rf"[ \t]*((?:0[xX])?([{_HEX}]+))(?:(:)|(?=[ \t]|\Z))")
"""An offset token at the start of a line: group 1 as written, 2 its digits, 3 a colon."""
_LINE_BREAK = re.compile(r"\r\n?|\n")
_BLANKS = re.compile(r"[ \t]*")
_NOT_SPACE = re.compile(r"\S")
"""What ``str.strip()`` keeps."""
_C_COMMENT = re.compile(r"/\*.*?\*/|//.*")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_HEX_BYTE_VALUE = re.compile(rf"0[xX][{_HEX}]{{1,2}}")
_RENDER = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))
"""How dumpers render a byte in the ASCII column: itself if printable, else ``.``."""
_QUOTE_LIMIT = 24
_HINT_DIGITS = 20
"""Offsets longer than this get no hint about their base."""
_SQUEEZED = (
    "'*' stands for lines left out as repeats of the line above, which cannot be read "
    "back: dump with 'hexdump -Cv' (or 'od -v') to print every line"
)


def looks_like_hex_text(head: bytes) -> bool:
    """Guess from the first bytes of a file whether it is hex text rather than raw binary.

    ``head`` is the start of the file (a few KiB; it may end mid-line or mid-character).
    It is hex text when it is text (UTF-8, no NUL or control characters other than
    whitespace) and at least one line of bytes can be read from it in one of the layouts
    of this module, before its end or its first unreadable line; a last line without a
    newline is left out, as it may be cut.

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
    except _DumpLayoutError:
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
        if max_line < _QUOTE_LIMIT:
            raise ValueError(f"max_line: expected {_QUOTE_LIMIT} or more, got {max_line}")
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
            if isinstance(self._reader, _CsvRows):
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
            cut = _separated(head)
            self._reader = _reader_for(self._number, head[: cut or None], self._max_line)
        if not isinstance(self._reader, _ByteTokens):
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
        assert isinstance(self._reader, _ByteTokens)
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
    if (colon := _offset_style(line)) is not None:
        return _OffsetLines(number, colon=colon)
    if "{" in line:
        return _CArray(number)
    if (columns := _csv_columns(line)) is not None:
        return _CsvRows(columns, max_line)
    return _ByteTokens(max_line)


def _separated(text: str) -> int:
    """The length of ``text`` up to and with its last separator (0 if it has none)."""
    return max(text.rfind(separator) for separator in _SEPARATOR_CHARS) + 1


def _quote(token: str) -> str:
    """``token`` quoted for a message, shortened if long."""
    if len(token) > _QUOTE_LIMIT:
        token = token[: _QUOTE_LIMIT - 4] + "..."
    return repr(token)


def _try_area(area: str) -> bytes | None:
    """The bytes of a run of byte tokens, or None if it is not one."""
    if "x" in area or "X" in area:
        if not _DATA_AREA.fullmatch(area):
            return None
        area = _OX_PREFIX.sub("", _OX_SHORT.sub(r"0\1", area))
    # Without 0x tokens, what bytes.fromhex reads (digit pairs, ASCII white space between
    # bytes) is what _DATA_AREA matches, commas aside.
    try:
        return bytes.fromhex(area.replace(",", " ") if "," in area else area)
    except ValueError:
        return None


def _token_problem(area: str) -> str:
    """Say what is wrong with the first bad token of a run that :func:`_try_area` refused."""
    for token in _SEPARATORS.split(area):
        if not token:
            continue
        if _OX_TOKEN.fullmatch(token):
            digits = len(token) - 2
            if digits == 0:
                return f"{_quote(token)} has no hex digits after '0x'"
            if digits > 2:
                return f"{_quote(token)} is wider than one byte (byte order unknown)"
        elif _HEX_RUN.fullmatch(token):
            if len(token) % 2:
                return f"{_quote(token)} has an odd number of hex digits ({len(token)})"
        else:
            return f"{_quote(token)} is not hex"
    return f"{_quote(area.strip())} cannot be read as hex bytes"


def _read_area(area: str, line: int) -> bytes:
    """The bytes of a run of byte tokens; raise naming ``line`` if it is not one."""
    data = _try_area(area)
    if data is None:
        raise HexTextError(line, _token_problem(area))
    return data


def _refuse_wide_groups(area: str, line: int) -> None:
    """After an offset without ``:``, bare tokens must be 2 digits: wider groups are
    machine-order words."""
    if (wide := _WIDE_GROUP.search(area)) is not None:
        raise _DumpLayoutError(
            line,
            f"{_quote(wide[0])} is a group of {len(wide[0])} hex digits after an offset "
            "without ':', as 'od -x' and plain 'hexdump' print words in the machine's byte "
            "order: dump with 'hexdump -C', 'od -A x -t x1' or 'xxd'",
        )


class _ByteTokens:
    """Byte tokens on every line; an ASCII column after ``|`` is dropped.

    A line longer than ``max_line`` is read in pieces, cut after a separator; a token
    longer than that is read as it comes.
    """

    closed = False

    def __init__(self, max_line: int) -> None:
        self._max_line = max_line
        self._run: _Run | None = None

    def read(self, number: int, line: str, out: bytearray) -> None:
        if line.strip() == "*":
            raise HexTextError(number, _SQUEEZED)
        bar = line.find("|")
        out += _read_area(line if bar < 0 else line[:bar], number)

    def finish(self, out: bytearray) -> None:
        pass

    def read_piece(self, number: int, text: str, out: bytearray, *, end: bool) -> str | None:
        """Read the next piece of a line too long to hold whole: the tokens that ``text``
        completes (all of them at the line's ``end``); return the text to keep for the next
        piece, or None if the rest of the line is an ASCII column."""
        if self._run is not None:
            text = self._run_on(number, text, out, end=end)
            if self._run is not None:
                return ""
        bar = text.find("|")
        if bar >= 0:
            out += _read_area(text[:bar], number)
            return None
        if end:
            out += _read_area(text, number)
            return ""
        cut = _separated(text)
        if cut:
            out += _read_area(text[:cut], number)
            text = text[cut:]
        if len(text) <= self._max_line:
            return text
        ox = _OX_PREFIX.match(text) is not None
        self._run = _Run(text[: _QUOTE_LIMIT - 4] + "...", ox=ox, size=2 if ox else 0)
        return self._run_on(number, text[2:] if ox else text, out, end=end)

    def _run_on(self, number: int, text: str, out: bytearray, *, end: bool) -> str:
        """Go on with a token longer than a line may be; return the text after it, if it ended."""
        run = self._run
        assert run is not None
        match = _HEX_RUN.match(text)
        digits = match[0] if match else ""
        run.size += len(digits)
        rest = text[len(digits) :]
        if not run.ox:
            digits = run.odd + digits
            even = len(digits) - len(digits) % 2
            out += bytes.fromhex(digits[:even])
            run.odd = digits[even:]
        if rest and rest[0] not in _SEPARATOR_CHARS and rest[0] != "|":
            raise HexTextError(number, f"{run.quote!r} is not hex")
        if rest or end:
            self._run = None
            if run.ox:
                problem = f"{run.quote!r} is wider than one byte (byte order unknown)"
                raise HexTextError(number, problem)
            if run.odd:
                problem = f"{run.quote!r} has an odd number of hex digits ({run.size})"
                raise HexTextError(number, problem)
        return rest


@dataclass(slots=True)
class _Run:
    """A token read in pieces: hex digits, or ``0x`` and hex digits."""

    quote: str
    """Its first characters and ``...``, to quote."""
    ox: bool
    size: int = 0
    """Its characters read so far."""
    odd: str = ""
    """A digit read but not yet paired (bare hex only)."""


class _CArray:
    """Byte tokens between the ``{`` on the first data line and the next ``}``."""

    def __init__(self, opening: int) -> None:
        self._opening = opening
        self._first = True
        self.closed = False

    def read(self, number: int, line: str, out: bytearray) -> None:
        if self._first:
            self._first = False
            line = line[line.index("{") + 1 :]
        area = _C_COMMENT.sub("", line)
        close = area.find("}")
        out += _read_area(area if close < 0 else area[:close], number)
        self.closed = close >= 0

    def finish(self, out: bytearray) -> None:
        if not self.closed:
            raise HexTextError(self._opening, "the '{' on this line is never closed by '}'")


def _offset_style(line: str) -> bool | None:
    """Whether the line starts with an offset column: True with ':', False without, or None."""
    match = _OFFSET.match(line)
    if match is None:
        return None
    if match[3]:
        return True
    digits = match[2]
    after = line[match.end() :].split(None, 1)
    if len(digits) < 4 or not after:
        return None
    token = after[0]
    return False if _HEX_RUN.fullmatch(token) and len(token) < len(digits) else None


def _cut_ascii(rest: str) -> tuple[str, bytes | None]:
    """The hex part of what follows an offset, without the ASCII column if there is one,
    and its bytes when the column was found by them (None otherwise).

    The column starts at the first gap after which the line shows the bytes before it.
    Those bytes grow from gap to gap, and the text after a gap is compared with them only
    when its length fits, which happens at most a few times a line: the work is linear in
    the line's length.
    """
    rest = rest.lstrip()
    end = len(rest.rstrip())
    before = _Rendering()
    start = column = 0
    gap = _next_gap(rest, 0)
    while gap is not None:
        segment = _try_area(rest[start : gap[0]])
        if segment is None:
            break
        start, after = gap
        before.extend(segment)
        if before.data and after > column:  # else the text after it is the one seen before
            found = _NOT_SPACE.search(rest, after)
            column = found.start() if found else len(rest)
            if before.shown_by(rest, column, end):
                return rest[:start], bytes(before.data)
        gap = _next_gap(rest, after)
    bar = rest.find("|")
    if bar >= 0:
        return rest[:bar], None
    if rest.rstrip().endswith("<") and (angle := rest.find(">")) >= 0:
        return rest[:angle], None
    return rest, None


class _Rendering:
    """Bytes read piece by piece, and whether a text is the ASCII column that shows them."""

    __slots__ = ("_lead", "_trail", "data")

    def __init__(self) -> None:
        self.data = bytearray()
        self._lead = 0
        self._trail = 0
        """Spaces (0x20) at either end of ``data``, which ``strip()`` drops from the column."""

    def extend(self, piece: bytes) -> None:
        if not piece:
            return
        if piece[0] != 0x20 and piece[-1] != 0x20:
            self._trail = 0
        elif not piece.strip(b" "):
            if self._lead == len(self.data):
                self._lead += len(piece)
            else:
                self._trail += len(piece)
        else:
            if self._lead == len(self.data):
                self._lead += len(piece) - len(piece.lstrip(b" "))
            self._trail = len(piece) - len(piece.rstrip(b" "))
        self.data += piece

    def shown_by(self, text: str, start: int, end: int) -> bool:
        """Whether ``text[start:end]`` is the ASCII column of ``data``: its rendering,
        stripped, or between ``|`` or ``>`` and ``<``. Compared only if the length fits."""
        width = max(0, end - start)
        size = len(self.data)
        if width != size - self._lead - self._trail and width != size + 2:
            return False
        shown = self.data.translate(_RENDER).decode()
        return text[start:end] in (shown.strip(), f"|{shown}|", f">{shown}<")


def _next_gap(text: str, start: int) -> tuple[int, int] | None:
    """Where the next gap at or after ``start`` begins and ends: two or more spaces or tabs,
    or a tab, where an undelimited ASCII column may start."""
    double = text.find("  ", start)
    tab = text.find("\t", start)
    if tab < 0 or 0 <= double < tab:
        if double < 0:
            return None
        begin = double
    else:
        begin = tab - 1 if tab > start and text[tab - 1] == " " else tab
    blanks = _BLANKS.match(text, begin)
    assert blanks is not None  # it matches anywhere, if only nothing
    return begin, blanks.end()


def _offset_mismatch(token: str, digits: str, base: int, count: int) -> str:
    """Say that offset ``token`` is not ``base + count``, with a hint if it is in another base."""
    expected = base + count
    width = min(len(digits), _HINT_DIGITS)
    problem = (
        f"offset {_quote(token)} should be {expected:0{width}x}: the lines from offset "
        f"{base:0{width}x} hold {count} bytes (a line missing, repeated or cut?)"
    )
    if len(digits) > _HINT_DIGITS:
        return problem
    if all(c in "01234567" for c in digits) and int(digits, 8) == expected:
        problem += "; the offsets look octal: dump with 'od -A x'"
    elif digits.isdecimal() and int(digits, 10) == expected:
        problem += "; the offsets look decimal: dump with hexadecimal offsets"
    return problem


class _OffsetLines:
    """An offset column (with ``:`` if ``colon``), the bytes, maybe an ASCII column."""

    closed = False

    def __init__(self, first: int, *, colon: bool) -> None:
        self._first = first
        self._colon = colon
        self._base = -1
        self._count = 0
        self._bare: tuple[int, str] | None = None
        """A line holding only an offset, and its offset: allowed as the last line only."""

    def read(self, number: int, line: str, out: bytearray) -> None:
        if self._bare is not None:
            bare, token = self._bare
            problem = f"offset {_quote(token)} has no bytes after it, as only the last line may"
            raise HexTextError(bare, problem)
        if line.strip() == "*":
            raise _DumpLayoutError(number, _SQUEEZED)
        match = _OFFSET.match(line)
        if match is None:
            found = line.split(None, 1)[0]
            raise HexTextError(
                number,
                f"expected an offset column (as on line {self._first}), found {_quote(found)}",
            )
        token, digits = match[1], match[2]
        offset = int(digits, 16)
        if self._base < 0:
            self._base = offset
        elif offset != self._base + self._count:
            raise _DumpLayoutError(number, _offset_mismatch(token, digits, self._base, self._count))
        area, data = _cut_ascii(line[match.end() :])
        if not area.strip():
            self._bare = (number, token)
            return
        if bool(match[3]) != self._colon:
            expected = "':' after the offset" if self._colon else "no ':' after the offset"
            raise HexTextError(number, f"expected {expected}, as on line {self._first}")
        if data is None:
            data = _read_area(area, number)
        if not self._colon:
            _refuse_wide_groups(area, number)
        out += data
        self._count += len(data)

    def finish(self, out: bytearray) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _CsvColumns:
    """Where a logic analyser export keeps what: column indexes in each row."""

    value: int
    value_name: str
    name: int | None
    type: int | None
    errors: tuple[tuple[int, str], ...]


def _csv_columns(line: str) -> _CsvColumns | None:
    """The columns of a logic analyser CSV header, or None if the line is not one."""
    if "," not in line:
        return None
    try:
        header = [field.strip() for field in next(csv.reader([line]))]
    except csv.Error:
        return None
    names = [field.lower() for field in header]
    for wanted in ("data", "value"):
        if wanted in names:
            value = names.index(wanted)
            break
    else:
        return None
    return _CsvColumns(
        value=value,
        value_name=header[value],
        name=names.index("name") if "name" in names else None,
        type=names.index("type") if "type" in names else None,
        errors=tuple((i, header[i]) for i, name in enumerate(names) if "error" in name),
    )


_QUOTED_TEXT = r'(?:[^"]|"")*'
_CSV_FIELD = rf'(?:[^",][^,]*|"{_QUOTED_TEXT}"(?:[^",][^,]*)?)?,'
"""A field and its comma, as the csv module reads it from the start of a field."""
_OPEN_FROM_FIELD = re.compile(rf'(?:{_CSV_FIELD})*"{_QUOTED_TEXT}')
"""A line, started at a field, that ends inside a quoted field (matched whole)."""
_OPEN_FROM_QUOTE = re.compile(rf'{_QUOTED_TEXT}(?:"(?:[^",][^,]*)?,{_OPEN_FROM_FIELD.pattern})?')
"""A line, started inside a quoted field, that ends inside one (matched whole)."""


class _CsvLines:
    """The lines of a CSV row, for ``csv.reader`` to pull; it may run dry and be refilled."""

    def __init__(self) -> None:
        self._lines: deque[tuple[int, str]] = deque()
        self.number = 0
        """The number of the line pulled last."""

    def append(self, number: int, line: str) -> None:
        self._lines.append((number, line))

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        if not self._lines:
            raise StopIteration
        self.number, line = self._lines.popleft()
        return line

    def __bool__(self) -> bool:
        return bool(self._lines)


class _CsvRows:
    """One byte a row, from the header's data/value column, refusing flagged rows.

    A row is read once it is complete: a quoted field may go on over the next lines, as
    the csv module reads them, up to ``max_line`` characters in all.
    """

    closed = False

    def __init__(self, columns: _CsvColumns, max_line: int) -> None:
        self._columns = columns
        self._max_line = max_line
        self._lines = _CsvLines()
        self._rows = csv.reader(self._lines)
        self._quoted = False
        """Whether the lines held end inside a quoted field."""
        self._size = 0
        self._analyser: tuple[int, str] | None = None

    def read(self, number: int, line: str, out: bytearray) -> None:
        self._lines.append(number, line)
        self._size += len(line)
        opened = _OPEN_FROM_QUOTE if self._quoted else _OPEN_FROM_FIELD
        self._quoted = opened.fullmatch(line) is not None
        if not self._quoted:
            self._read_row(out)
        elif self._size > self._max_line:
            self._next_row()  # raises if a field outgrew the csv module's limit
            raise HexTextError(
                number,
                f"a CSV row longer than {self._max_line} characters (a '\"' not closed?)",
            )

    def finish(self, out: bytearray) -> None:
        if self._lines:
            self._read_row(out)

    def _next_row(self) -> list[str]:
        self._size = 0
        try:
            return next(self._rows)
        except csv.Error as exc:
            raise HexTextError(self._lines.number, f"not a CSV row: {exc}") from None

    def _read_row(self, out: bytearray) -> None:
        cells = [cell.strip() for cell in self._next_row()]
        number = self._lines.number
        name = _cell(cells, self._columns.name)
        if name is not None:
            if self._analyser is None:
                self._analyser = (number, name)
            elif name != self._analyser[1]:
                raise HexTextError(
                    number,
                    f"a row of analyser {name!r}, but line {self._analyser[0]} is of "
                    f"{self._analyser[1]!r}: export one analyser's table",
                )
        out.append(_csv_byte(cells, self._columns, number))


def _cell(cells: list[str], index: int | None) -> str | None:
    """The cell at ``index`` (``""`` if the row is short), or None for a column not there."""
    if index is None:
        return None
    return cells[index] if index < len(cells) else ""


def _csv_byte(cells: list[str], columns: _CsvColumns, number: int) -> int:
    """The byte of one row of a logic analyser export; raise naming the line if none."""
    if len(cells) <= columns.value:
        raise HexTextError(number, f"the row has no {columns.value_name!r} column")
    for index, column in columns.errors:
        if index < len(cells) and cells[index]:
            raise HexTextError(
                number, f"the analyser flagged this byte: {column} = {cells[index]!r}"
            )
    kind = _cell(cells, columns.type)
    if kind is not None and kind.lower() != "data":
        raise HexTextError(number, f"a row of type {kind!r}, not a serial data byte")
    value = cells[columns.value]
    if not _HEX_BYTE_VALUE.fullmatch(value):
        raise HexTextError(
            number,
            f"{columns.value_name} {_quote(value)} is not a hex byte such as 0x5A: set the "
            "analyser's display radix to hexadecimal before exporting",
        )
    return int(value, 16)
