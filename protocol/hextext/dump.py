"""Dumps with an offset column (``xxd``, ``hexdump -C``, ``od``): offsets checked line by
line, the ASCII column told apart from the bytes."""

from __future__ import annotations

import re

from protocol.hextext.errors import DumpLayoutError, HexTextError
from protocol.hextext.tokens import HEX, HEX_RUN, SQUEEZED, quote, read_area, try_area

__all__ = ["OffsetLines", "offset_style"]

_WIDE_GROUP = re.compile(rf"[{HEX}]{{3,}}")
_OFFSET = re.compile(rf"[ \t]*((?:0[xX])?([{HEX}]+))(?:(:)|(?=[ \t]|\Z))")
"""An offset token at the start of a line: group 1 as written, 2 its digits, 3 a colon."""
_BLANKS = re.compile(r"[ \t]*")
_NOT_SPACE = re.compile(r"\S")
"""What ``str.strip()`` keeps."""
_RENDER = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))
"""How dumpers render a byte in the ASCII column: itself if printable, else ``.``."""
_HINT_DIGITS = 20
"""Offsets longer than this get no hint about their base."""


def offset_style(line: str) -> bool | None:
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
    return False if HEX_RUN.fullmatch(token) and len(token) < len(digits) else None


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
        segment = try_area(rest[start : gap[0]])
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
        f"offset {quote(token)} should be {expected:0{width}x}: the lines from offset "
        f"{base:0{width}x} hold {count} bytes (a line missing, repeated or cut?)"
    )
    if len(digits) > _HINT_DIGITS:
        return problem
    if all(c in "01234567" for c in digits) and int(digits, 8) == expected:
        problem += "; the offsets look octal: dump with 'od -A x'"
    elif digits.isdecimal() and int(digits, 10) == expected:
        problem += "; the offsets look decimal: dump with hexadecimal offsets"
    return problem


class OffsetLines:
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
            problem = f"offset {quote(token)} has no bytes after it, as only the last line may"
            raise HexTextError(bare, problem)
        if line.strip() == "*":
            raise DumpLayoutError(number, SQUEEZED)
        match = _OFFSET.match(line)
        if match is None:
            found = line.split(None, 1)[0]
            raise HexTextError(
                number,
                f"expected an offset column (as on line {self._first}), found {quote(found)}",
            )
        token, digits = match[1], match[2]
        offset = int(digits, 16)
        if self._base < 0:
            self._base = offset
        elif offset != self._base + self._count:
            raise DumpLayoutError(number, _offset_mismatch(token, digits, self._base, self._count))
        area, data = _cut_ascii(line[match.end() :])
        if not area.strip():
            self._bare = (number, token)
            return
        if bool(match[3]) != self._colon:
            expected = "':' after the offset" if self._colon else "no ':' after the offset"
            raise HexTextError(number, f"expected {expected}, as on line {self._first}")
        if data is None:
            data = read_area(area, number)
        if not self._colon:
            _refuse_wide_groups(area, number)
        out += data
        self._count += len(data)

    def finish(self, out: bytearray) -> None:
        pass


def _refuse_wide_groups(area: str, line: int) -> None:
    """After an offset without ``:``, bare tokens must be 2 digits: wider groups are
    machine-order words."""
    if (wide := _WIDE_GROUP.search(area)) is not None:
        raise DumpLayoutError(
            line,
            f"{quote(wide[0])} is a group of {len(wide[0])} hex digits after an offset "
            "without ':', as 'od -x' and plain 'hexdump' print words in the machine's byte "
            "order: dump with 'hexdump -C', 'od -A x -t x1' or 'xxd'",
        )
