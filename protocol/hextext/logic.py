"""Logic analyser CSV exports (Saleae Logic 1 and 2, async serial): one byte a row."""

from __future__ import annotations

import csv
import re
from collections import deque
from dataclasses import dataclass

from protocol.hextext.errors import HexTextError
from protocol.hextext.tokens import HEX, quote

__all__ = ["CsvRows", "csv_columns"]

_HEX_BYTE_VALUE = re.compile(rf"0[xX][{HEX}]{{1,2}}")


@dataclass(frozen=True, slots=True)
class CsvColumns:
    """Where a logic analyser export keeps what: column indexes in each row."""

    value: int
    value_name: str
    name: int | None
    type: int | None
    errors: tuple[tuple[int, str], ...]


def csv_columns(line: str) -> CsvColumns | None:
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
    return CsvColumns(
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


class CsvRows:
    """One byte a row, from the header's data/value column, refusing flagged rows.

    A row is read once it is complete: a quoted field may go on over the next lines, as
    the csv module reads them, up to ``max_line`` characters in all.
    """

    closed = False

    def __init__(self, columns: CsvColumns, max_line: int) -> None:
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


def _csv_byte(cells: list[str], columns: CsvColumns, number: int) -> int:
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
            f"{columns.value_name} {quote(value)} is not a hex byte such as 0x5A: set the "
            "analyser's display radix to hexadecimal before exporting",
        )
    return int(value, 16)
