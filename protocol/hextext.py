"""Hex text back into bytes: captures printed by terminals, hex dumpers and logic analysers.

A capture is not always a binary file: it may be what a serial terminal showed, what
``xxd`` or ``hexdump -C`` printed, a C array, or a logic analyser's CSV table. Ask
:func:`looks_like_hex_text` about the first few KiB of a file; if it says yes, hand the
whole text to :func:`parse_hex_text` and feed the bytes it returns to the decoder::

    if looks_like_hex_text(head):
        data = parse_hex_text(text)  # raises HexTextError naming the line

The layout is told by the first *data line* (the first line that is neither blank nor a
comment), trying these in turn:

1. **Offset column**: ``xxd``, ``hexdump -C``, ``od -A x -t x1``, ``0000: AA 55``,
   ``0x0000: AA 55``. The first token of the first data line is an offset when a ``:`` is
   attached to it, or when, without ``:``, it has at least 4 hex digits and the next token
   is a shorter bare hex token (``00000000  aa 55``). Then every data line must start with
   an offset (with ``:`` or without, as the first), and each offset must equal the first
   one plus the bytes read since, which catches lost, doubled or cut lines; a line holding
   only an offset (the total, which ``hexdump`` and ``od`` print last) is accepted as the
   last line only. After an offset without ``:``, the bytes must be 2-digit tokens: wider
   groups are what ``od -x`` and plain ``hexdump`` print, in the machine's byte order, and
   are refused. A first data line holding a single token is data, not an offset (so
   ``000000``, what ``od`` prints for an empty file, reads as three zero bytes), and the
   first offset may be anything (``hexdump -s``), so a lost first line goes unnoticed.
2. **C array**: when the first data line holds ``{`` (``unsigned char x[] = {``, the output
   of ``xxd -i``), only the byte tokens between that ``{`` and the next ``}`` are read;
   ``//`` and one-line ``/* */`` comments are dropped there, and everything after the
   ``}`` (such as ``unsigned int x_len = 25;``) is ignored.
3. **Logic analyser CSV** (Saleae Logic 1 and Logic 2 async serial exports): when the first
   data line is a CSV header naming a ``data`` or ``value`` column, each later row gives one
   byte, a ``0x`` value in that column. A row with something in an ``... error`` column
   (a framing or parity error), a ``type`` other than ``data``, a second analyser ``name``,
   or a value not written as a 0x hex byte is an error naming its line.
4. **Byte tokens** otherwise, one or more a line: ``AA 55 12``, ``aa5512050074``
   (continuous hex), ``aa55 1205`` (groups), ``0xAA, 0x55,`` (C style, commas and/or
   whitespace). A bare token is an even number of hex digits, read in the order written; a
   ``0x`` token is one byte (one or two digits: ``0xAA55`` is refused, its byte order being
   unknown). Everything from a ``|`` on is dropped.

The ASCII column of a dump is never read as data. After an offset, it is found by what it
shows: past a run of two or more spaces (or a tab) after the hex, the text that the bytes
before it render to (themselves if printable, ``.`` otherwise), bare as ``xxd`` prints it,
between ``|`` as ``hexdump -C`` does or between ``>`` and ``<`` as ``od -t x1z`` does,
ignoring the padding. So ``ab 12`` in the ASCII column is not data, nor is the column of
xxd's last, shorter line, nor a ``|`` inside it. Failing that, everything from the first
``|``, or a trailing ``>...<``, is dropped.

Everywhere: lines whose first non-blank characters are ``#`` or ``//`` are comments;
blank lines and any whitespace are allowed; hex digits may be upper or lower case; a line
that is just ``*`` (``hexdump``/``od`` squeezing repeated lines) is an error, since the
bytes it stands for are not shown (dump with ``hexdump -Cv`` or ``od -v``).
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass

from protocol.errors import ProtocolError

__all__ = ["HexTextError", "looks_like_hex_text", "parse_hex_text"]


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
_OX_TOKEN = re.compile(rf"0[xX][{_HEX}]*")
_OX_SHORT = re.compile(rf"0[xX]([{_HEX}])(?![{_HEX}])")
_OX_PREFIX = re.compile(r"0[xX]")
_HEX_RUN = re.compile(rf"[{_HEX}]+")
_WIDE_GROUP = re.compile(rf"[{_HEX}]{{3,}}")
_OFFSET = re.compile(rf"[ \t]*((?:0[xX])?([{_HEX}]+))(?:(:)|(?=[ \t]|\Z))")
"""An offset token at the start of a line: group 1 as written, 2 its digits, 3 a colon."""
_LINE_BREAK = re.compile(r"\r\n?|\n")
_GAP = re.compile(r"[ \t]{2,}|\t")
"""Where an undelimited ASCII column may start."""
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
    ``od -x``): call :func:`parse_hex_text` next, and report the :class:`HexTextError` it
    raises rather than decode the text as binary.
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
    out = bytearray()
    try:
        _parse_into(text, out)
    except _DumpLayoutError:
        return True
    except HexTextError:
        pass
    return len(out) > 0


def parse_hex_text(text: str) -> bytes:
    """Return the bytes the hex text shows, in order; empty text gives ``b""``.

    Raises :class:`HexTextError` naming the first line that cannot be read: the caller
    reports it and reads nothing from the text (no partial result is returned).
    """
    out = bytearray()
    _parse_into(text, out)
    return bytes(out)


def _parse_into(text: str, out: bytearray) -> None:
    """Detect the layout from the first data line and append the bytes shown to ``out``.

    On error, ``out`` holds the bytes of the lines read before the offending one.
    """
    lines = _data_lines(text)
    if not lines:
        return
    first = lines[0][1]
    if (colon := _offset_style(first)) is not None:
        _read_offset_lines(lines, out, colon=colon)
    elif "{" in first:
        _read_c_array(lines, out)
    elif (columns := _csv_columns(first)) is not None:
        _read_csv(lines, columns, out)
    else:
        _read_plain(lines, out)


def _data_lines(text: str) -> list[tuple[int, str]]:
    """Number the lines from 1 (ended by LF, CR LF or CR); drop blank and comment lines."""
    text = text.removeprefix("\ufeff")
    lines: list[tuple[int, str]] = []
    for number, line in enumerate(_LINE_BREAK.split(text), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "//")):
            lines.append((number, line))
    return lines


def _quote(token: str) -> str:
    """``token`` quoted for a message, shortened if long."""
    if len(token) > _QUOTE_LIMIT:
        token = token[: _QUOTE_LIMIT - 4] + "..."
    return repr(token)


def _try_area(area: str) -> bytes | None:
    """The bytes of a run of byte tokens, or None if it is not one."""
    if not _DATA_AREA.fullmatch(area):
        return None
    if "x" in area or "X" in area:
        area = _OX_PREFIX.sub("", _OX_SHORT.sub(r"0\1", area))
    return bytes.fromhex(area.replace(",", " "))


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


def _read_area(area: str, line: int, *, single_bytes: bool = False) -> bytes:
    """The bytes of a run of byte tokens; raise naming ``line`` if it is not one.

    With ``single_bytes``, bare tokens must be exactly 2 digits (after an offset without
    ``:``, wider groups are machine-order words).
    """
    data = _try_area(area)
    if data is None:
        raise HexTextError(line, _token_problem(area))
    if single_bytes and (wide := _WIDE_GROUP.search(area)) is not None:
        raise _DumpLayoutError(
            line,
            f"{_quote(wide[0])} is a group of {len(wide[0])} hex digits after an offset "
            "without ':', as 'od -x' and plain 'hexdump' print words in the machine's byte "
            "order: dump with 'hexdump -C', 'od -A x -t x1' or 'xxd'",
        )
    return data


def _read_plain(lines: list[tuple[int, str]], out: bytearray) -> None:
    """Byte tokens on every line; an ASCII column after ``|`` is dropped."""
    for number, line in lines:
        if line.strip() == "*":
            raise HexTextError(number, _SQUEEZED)
        bar = line.find("|")
        out += _read_area(line if bar < 0 else line[:bar], number)


def _read_c_array(lines: list[tuple[int, str]], out: bytearray) -> None:
    """Byte tokens between the ``{`` on the first data line and the next ``}``."""
    opening = lines[0][0]
    for index, (number, line) in enumerate(lines):
        area = _C_COMMENT.sub("", line[line.index("{") + 1 :] if index == 0 else line)
        close = area.find("}")
        out += _read_area(area if close < 0 else area[:close], number)
        if close >= 0:
            return
    raise HexTextError(opening, "the '{' on this line is never closed by '}'")


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


def _cut_ascii(rest: str) -> str:
    """The hex part of what follows an offset: without the ASCII column, if there is one."""
    rest = rest.lstrip()
    for gap in _GAP.finditer(rest):
        head = rest[: gap.start()]
        data = _try_area(head)
        if data is None:
            break
        if data and _shows(rest[gap.start() :].strip(), data):
            return head
    bar = rest.find("|")
    if bar >= 0:
        return rest[:bar]
    if rest.rstrip().endswith("<") and (angle := rest.find(">")) >= 0:
        return rest[:angle]
    return rest


def _shows(column: str, data: bytes) -> bool:
    """Whether ``column`` (stripped) is the ASCII column of ``data``, maybe in ``|`` or ``><``."""
    shown = data.translate(_RENDER).decode()
    return column in (shown.strip(), f"|{shown}|", f">{shown}<")


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


def _read_offset_lines(lines: list[tuple[int, str]], out: bytearray, *, colon: bool) -> None:
    """An offset column (with ``:`` if ``colon``), the bytes, maybe an ASCII column."""
    first = lines[0][0]
    base = -1
    count = 0
    last = len(lines) - 1
    for index, (number, line) in enumerate(lines):
        if line.strip() == "*":
            raise _DumpLayoutError(number, _SQUEEZED)
        match = _OFFSET.match(line)
        if match is None:
            found = line.split(None, 1)[0]
            raise HexTextError(
                number, f"expected an offset column (as on line {first}), found {_quote(found)}"
            )
        token, digits = match[1], match[2]
        offset = int(digits, 16)
        if base < 0:
            base = offset
        elif offset != base + count:
            raise _DumpLayoutError(number, _offset_mismatch(token, digits, base, count))
        area = _cut_ascii(line[match.end() :])
        if not area.strip():
            if index != last:
                problem = f"offset {_quote(token)} has no bytes after it, as only the last line may"
                raise HexTextError(number, problem)
            continue
        if bool(match[3]) != colon:
            expected = "':' after the offset" if colon else "no ':' after the offset"
            raise HexTextError(number, f"expected {expected}, as on line {first}")
        data = _read_area(area, number, single_bytes=not colon)
        out += data
        count += len(data)


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


def _cell(cells: list[str], index: int | None) -> str | None:
    """The cell at ``index`` (``""`` if the row is short), or None for a column not there."""
    if index is None:
        return None
    return cells[index] if index < len(cells) else ""


def _read_csv(lines: list[tuple[int, str]], columns: _CsvColumns, out: bytearray) -> None:
    """One byte a row, from the header's data/value column, refusing flagged rows."""
    rows = csv.reader(line for _, line in lines[1:])
    analyser: tuple[int, str] | None = None
    try:
        for row in rows:
            number = lines[rows.line_num][0]
            cells = [cell.strip() for cell in row]
            name = _cell(cells, columns.name)
            if name is not None:
                if analyser is None:
                    analyser = (number, name)
                elif name != analyser[1]:
                    raise HexTextError(
                        number,
                        f"a row of analyser {name!r}, but line {analyser[0]} is of "
                        f"{analyser[1]!r}: export one analyser's table",
                    )
            out.append(_csv_byte(cells, columns, number))
    except csv.Error as exc:
        number = lines[min(rows.line_num, len(lines) - 1)][0]
        raise HexTextError(number, f"not a CSV row: {exc}") from None


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
