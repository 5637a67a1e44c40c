"""Byte tokens (``AA 55``, ``aa55``, ``0xAA,``): the layout of bare bytes and of C arrays,
and how every layout reads the bytes of a line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.hextext.errors import HexTextError

__all__ = [
    "HEX",
    "HEX_RUN",
    "QUOTE_LIMIT",
    "SQUEEZED",
    "ByteTokens",
    "CArray",
    "quote",
    "read_area",
    "separated",
    "try_area",
]

HEX = "0-9A-Fa-f"
_BYTE_TOKEN = rf"(?:0[xX][{HEX}]{{1,2}}|(?:[{HEX}]{{2}})+)"
_DATA_AREA = re.compile(rf"[\s,]*(?:{_BYTE_TOKEN}(?:[\s,]+|\Z))*", re.ASCII)
"""Byte tokens separated by whitespace and/or commas; matched whole (``fullmatch``)."""
_SEPARATORS = re.compile(r"[\s,]+", re.ASCII)
_SEPARATOR_CHARS = " \t\v\f,"
"""What ``_SEPARATORS`` matches within a line."""
_OX_TOKEN = re.compile(rf"0[xX][{HEX}]*")
_OX_SHORT = re.compile(rf"0[xX]([{HEX}])(?![{HEX}])")
_OX_PREFIX = re.compile(r"0[xX]")
HEX_RUN = re.compile(rf"[{HEX}]+")
_C_COMMENT = re.compile(r"/\*.*?\*/|//.*")
QUOTE_LIMIT = 24
SQUEEZED = (
    "'*' stands for lines left out as repeats of the line above, which cannot be read "
    "back: dump with 'hexdump -Cv' (or 'od -v') to print every line"
)


def separated(text: str) -> int:
    """The length of ``text`` up to and with its last separator (0 if it has none)."""
    return max(text.rfind(separator) for separator in _SEPARATOR_CHARS) + 1


def quote(token: str) -> str:
    """``token`` quoted for a message, shortened if long."""
    if len(token) > QUOTE_LIMIT:
        token = token[: QUOTE_LIMIT - 4] + "..."
    return repr(token)


def try_area(area: str) -> bytes | None:
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
    """Say what is wrong with the first bad token of a run that :func:`try_area` refused."""
    for token in _SEPARATORS.split(area):
        if not token:
            continue
        if _OX_TOKEN.fullmatch(token):
            digits = len(token) - 2
            if digits == 0:
                return f"{quote(token)} has no hex digits after '0x'"
            if digits > 2:
                return f"{quote(token)} is wider than one byte (byte order unknown)"
        elif HEX_RUN.fullmatch(token):
            if len(token) % 2:
                return f"{quote(token)} has an odd number of hex digits ({len(token)})"
        else:
            return f"{quote(token)} is not hex"
    return f"{quote(area.strip())} cannot be read as hex bytes"


def read_area(area: str, line: int) -> bytes:
    """The bytes of a run of byte tokens; raise naming ``line`` if it is not one."""
    data = try_area(area)
    if data is None:
        raise HexTextError(line, _token_problem(area))
    return data


class ByteTokens:
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
            raise HexTextError(number, SQUEEZED)
        bar = line.find("|")
        out += read_area(line if bar < 0 else line[:bar], number)

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
            out += read_area(text[:bar], number)
            return None
        if end:
            out += read_area(text, number)
            return ""
        cut = separated(text)
        if cut:
            out += read_area(text[:cut], number)
            text = text[cut:]
        if len(text) <= self._max_line:
            return text
        ox = _OX_PREFIX.match(text) is not None
        self._run = _Run(text[: QUOTE_LIMIT - 4] + "...", ox=ox, size=2 if ox else 0)
        return self._run_on(number, text[2:] if ox else text, out, end=end)

    def _run_on(self, number: int, text: str, out: bytearray, *, end: bool) -> str:
        """Go on with a token longer than a line may be; return the text after it, if it ended."""
        run = self._run
        assert run is not None
        match = HEX_RUN.match(text)
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


class CArray:
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
        out += read_area(area if close < 0 else area[:close], number)
        self.closed = close >= 0

    def finish(self, out: bytearray) -> None:
        if not self.closed:
            raise HexTextError(self._opening, "the '{' on this line is never closed by '}'")
