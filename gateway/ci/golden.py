"""Golden comparison: decoded records against the expected records of a golden file.

``tgw check`` decodes a dump, reads the expected records (JSON lines, the shape
:func:`protocol.records.event_record` makes) and calls :func:`compare`; an empty answer means
the dump still decodes as it did, anything else is printed with :func:`format_differences`.

The two lists are aligned first, so that one record lost or gained shows as one ``missing``
or ``extra`` difference instead of making every later record differ:

1. records are matched on their whole content less ``offset`` (offsets shift after an
   inserted or removed record), by a longest common subsequence
   (:class:`difflib.SequenceMatcher`, or Myers' algorithm where records repeat a lot);
2. in the gaps that leaves, on coarser keys in turn: content less the hex dumps, then kind
   and decoded fields (so that a change common to every record still aligns);
3. in the gaps still left, records of the same kind (type, message or error kind, cmd,
   address) are paired, the most alike together, and compared key by key (``changed``); the
   rest are ``missing`` (expected, not there) or ``extra`` (there, not expected).

Each step has a bounded cost, so a golden file that no longer matches at all still gives its
answer quickly (the alignment is then the best found, not always the best there is).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal

__all__ = [
    "ABSENT",
    "BYTE_KEYS",
    "VARYING_KEYS",
    "Absent",
    "Change",
    "Difference",
    "DifferenceKind",
    "comparable",
    "compare",
    "format_differences",
    "record_changes",
]

VARYING_KEYS: Final[frozenset[str]] = frozenset({"time"})
"""Keys whose values legitimately differ from run to run (receive time): never compared."""

BYTE_KEYS: Final[tuple[str, ...]] = ("payload", "raw")
"""The hex dumps of a frame: a changed field changes them too, so they are reported only when
nothing else of the record differs (``payload`` before ``raw``)."""

UNCOMPARED_KEYS: Final[frozenset[str]] = frozenset({"offset"})
"""Shown in labels, not compared: an inserted or removed record shifts every later offset."""

MAX_CHANGES_SHOWN: Final = 10
"""How many key changes :meth:`Difference.describe` lists for one record."""

MAX_VALUE_WIDTH: Final = 80
"""Longer values are cut in descriptions."""

PAIRING_LIMIT: Final = 4096
"""Blocks of unmatched records up to this many (expected x actual) pairs are paired for the
best overall similarity; larger ones by kind alone, in order."""

MATCHER_WORK: Final = 200_000
"""Alignment by :class:`difflib.SequenceMatcher` while its work (each item of one list times
the equal items of the other) is at most this; it grows as the square of repeated items."""

MYERS_EDITS: Final = 1000
MYERS_WORK: Final = 5_000_000
"""Alignment by Myers' algorithm while it takes at most this many edits and steps."""

RESYNC_WINDOW: Final = 16
"""Past the limits above, a mismatch is resolved by looking this far ahead, no further."""


class Absent(Enum):
    """The type of :data:`ABSENT`."""

    ABSENT = "absent"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = Absent.ABSENT
"""Stands in a :data:`Change` for a key or list item that one side does not have."""

DifferenceKind = Literal["changed", "missing", "extra"]

Change = tuple[str, Any, Any]
"""``(key_path, expected, got)``, e.g. ``("fields.accel[2]", 0.5, 0.25)``; either value may be
:data:`ABSENT`."""

Match = tuple[int, int]
Pair = tuple[int | None, int | None]


@dataclass(frozen=True)
class Difference:
    """One way the actual records differ from the expected ones.

    ``changed``: an expected record and the actual record paired with it differ in
    ``changes``. ``missing``: an expected record has no actual counterpart. ``extra``: an
    actual record has no expected counterpart. Print :meth:`describe`; the other fields are
    for callers that sort, count or filter.
    """

    kind: DifferenceKind
    index: int
    """1-based position among the expected records (changed, missing) or the actual ones
    (extra)."""
    offset: int | None
    """The record's offset: the expected one for changed and missing, the actual one for
    extra (None if the record has none)."""
    name: str
    """What the record is: ``frame 12 (environment, cmd 16)`` (the 12th expected frame: the
    number counts the records of its type, unlike :attr:`index`), ``error 3 (bad_checksum,
    9 bytes)``; an extra record's name has no number: ``error (garbage, 3 bytes)``."""
    changes: tuple[Change, ...] = ()
    """For ``changed``: what differs, in key order (nested keys as ``fields.flags.charging``,
    list items as ``fields.accel[2]``)."""
    actual_offset: int | None = None
    """For ``changed``: the actual record's offset, if it is not :attr:`offset`."""

    @property
    def label(self) -> str:
        """The record's name and offset: ``frame 12 (environment, cmd 16) at offset 345``."""
        return self.name + _at_offset(self.offset)

    def describe(self) -> str:
        """One readable line, or a heading and indented lines when several keys changed."""
        if self.kind == "missing":
            return f"missing: {self.name} expected{_at_offset(self.offset)}"
        if self.kind == "extra":
            return f"extra: {self.label}"
        heading = self.label
        if self.actual_offset is not None:
            heading += f" (now at offset {self.actual_offset})"
        lines = [_describe_change(change) for change in self.changes[:MAX_CHANGES_SHOWN]]
        if len(self.changes) > MAX_CHANGES_SHOWN:
            lines.append(f"... and {len(self.changes) - MAX_CHANGES_SHOWN} more changes")
        if len(lines) == 1:
            return f"{heading}: {lines[0]}"
        return "\n".join([f"{heading}:", *(f"  {line}" for line in lines)])


def comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``record`` as it compares: without :data:`VARYING_KEYS`, and as its JSON line
    reads back (bytes as hex strings, tuples as lists), so in-memory records compare with
    records read from a golden file."""
    return {key: _plain(value) for key, value in record.items() if key not in VARYING_KEYS}


def compare(
    expected: Sequence[Mapping[str, Any]], actual: Sequence[Mapping[str, Any]]
) -> list[Difference]:
    """Return how ``actual`` differs from ``expected``, in record order; empty if it does not.

    Offsets are not compared (they are shown); :data:`VARYING_KEYS` are ignored; two NaNs are
    equal; ``True`` is not ``1``.
    """
    wanted = [comparable(record) for record in expected]
    got = [comparable(record) for record in actual]
    numbers = _numbers(wanted)
    differences: list[Difference] = []
    for i, j in _align(wanted, got):
        if i is not None and j is not None:
            changes = record_changes(wanted[i], got[j])
            if changes:
                name = _name(wanted[i], numbers[i])
                differences.append(_changed(wanted[i], got[j], i + 1, name, changes))
        elif i is not None:
            differences.append(
                Difference("missing", i + 1, _offset(wanted[i]), _name(wanted[i], numbers[i]))
            )
        elif j is not None:
            differences.append(Difference("extra", j + 1, _offset(got[j]), _name(got[j], None)))
    return differences


def format_differences(differences: Sequence[Difference], limit: int = 20) -> str:
    """Describe the first ``limit`` differences, one per line (or block), then how many more
    there are; empty if there are none."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    lines = [difference.describe() for difference in differences[:limit]]
    more = len(differences) - limit
    if more > 0:
        lines.append(f"... and {more} more difference{'' if more == 1 else 's'}")
    return "\n".join(lines)


def record_changes(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> tuple[Change, ...]:
    """Return the changes from ``expected`` to ``actual`` (both :func:`comparable`), offsets
    aside; ``payload`` and ``raw`` only if nothing else changed."""
    changes = [
        change
        for key in _keys(expected, actual)
        if key not in UNCOMPARED_KEYS
        for change in _diff(str(key), expected.get(key, ABSENT), actual.get(key, ABSENT))
    ]
    for keys in (BYTE_KEYS, BYTE_KEYS[1:]):
        main = [change for change in changes if _root(change[0]) not in keys]
        if main:
            return tuple(main)
    return tuple(changes)


# Alignment.


def _align(wanted: Sequence[Mapping[str, Any]], got: Sequence[Mapping[str, Any]]) -> list[Pair]:
    """Pair the records in order: ``(i, j)`` compared, ``(i, None)`` missing, ``(None, j)``
    extra. Records are matched on keys from finest to coarsest, each in the gaps the finer
    ones left; then the rest are paired by kind."""
    levels = [
        _Level(key, wanted, got)
        for key in (_content_key, _content_key_without_bytes, _fields_key, _pairing_key)
    ]
    return _align_range(
        wanted, got, levels, level=0, wanted_range=(0, len(wanted)), got_range=(0, len(got))
    )


class _Level:
    """Records numbered by one key (equal numbers for equal keys), computed when first asked."""

    def __init__(
        self,
        key: Callable[[Mapping[str, Any]], Hashable],
        wanted: Sequence[Mapping[str, Any]],
        got: Sequence[Mapping[str, Any]],
    ) -> None:
        self._key = key
        self._table: dict[Hashable, int] = {}
        self._records = (wanted, got)
        self._ids = ([-1] * len(wanted), [-1] * len(got))

    def wanted(self, start: int, stop: int) -> list[int]:
        """The numbers of ``wanted[start:stop]``."""
        return self._numbers(0, start, stop)

    def got(self, start: int, stop: int) -> list[int]:
        """The numbers of ``got[start:stop]``."""
        return self._numbers(1, start, stop)

    def _numbers(self, side: int, start: int, stop: int) -> list[int]:
        ids, records = self._ids[side], self._records[side]
        for index in range(start, stop):
            if ids[index] < 0:
                ids[index] = self._table.setdefault(self._key(records[index]), len(self._table))
        return ids[start:stop]


def _align_range(
    wanted: Sequence[Mapping[str, Any]],
    got: Sequence[Mapping[str, Any]],
    levels: Sequence[_Level],
    *,
    level: int,
    wanted_range: tuple[int, int],
    got_range: tuple[int, int],
) -> list[Pair]:
    """:func:`_align` for ``wanted[i1:i2]`` and ``got[j1:j2]`` (the ranges), from key
    ``levels[level]`` on."""
    (i1, i2), (j1, j2) = wanted_range, got_range
    if i1 == i2 or j1 == j2:
        return _unpaired(i1, i2, j1, j2)
    keys = levels[level]
    a, b = keys.wanted(i1, i2), keys.got(j1, j2)
    last = level == len(levels) - 1
    if last and (i2 - i1) * (j2 - j1) <= PAIRING_LIMIT:
        return _pair_by_similarity(wanted, got, a, b, start=(i1, j1))
    pairs: list[Pair] = []
    for i, j in [*((i + i1, j + j1) for i, j in _matches(a, b)), (i2, j2)]:
        if last:
            pairs.extend(_unpaired(i1, i, j1, j))
        else:
            pairs.extend(
                _align_range(
                    wanted, got, levels, level=level + 1, wanted_range=(i1, i), got_range=(j1, j)
                )
            )
        if i < i2:
            pairs.append((i, j))
        i1, j1 = i + 1, j + 1
    return pairs


def _unpaired(i1: int, i2: int, j1: int, j2: int) -> list[Pair]:
    """``wanted[i1:i2]`` missing, then ``got[j1:j2]`` extra."""
    return [*((i, None) for i in range(i1, i2)), *((None, j) for j in range(j1, j2))]


def _content_key(record: Mapping[str, Any]) -> Hashable:
    """All that is compared of ``record``: equal keys mean no difference."""
    return _freeze({key: value for key, value in record.items() if key not in UNCOMPARED_KEYS})


def _content_key_without_bytes(record: Mapping[str, Any]) -> Hashable:
    """All but the hex dumps: equal for records that differ in raw bytes only."""
    ignored = UNCOMPARED_KEYS.union(BYTE_KEYS)
    return _freeze({key: value for key, value in record.items() if key not in ignored})


def _fields_key(record: Mapping[str, Any]) -> Hashable:
    """Kind and decoded values (size for errors and gaps): equal for records that differ in
    keys around them only (e.g. one added to every record)."""
    return _freeze([_pairing_key(record), record.get("fields"), record.get("size")])


def _pairing_key(record: Mapping[str, Any]) -> Hashable:
    """What makes two records the same record that changed, rather than two different ones."""
    record_type = record.get("type")
    name = record.get("kind") if record_type == "error" else record.get("message")
    return _freeze([record_type, name, record.get("cmd"), record.get("address")])


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for ``value`` that is equal exactly when :func:`_diff` finds nothing."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda item: repr(item[0]))
        return ("dict", tuple((key, _freeze(item)) for key, item in items))
    if isinstance(value, list):
        return ("list", tuple(_freeze(item) for item in value))
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, Hashable):
        return value
    return ("repr", repr(value))


def _matches(a: Sequence[int], b: Sequence[int]) -> list[Match]:
    """Return positions ``(i, j)`` with ``a[i] == b[j]``, increasing in both: a long common
    subsequence (the longest from Myers' algorithm; near it otherwise).

    Common runs at both ends are matched first; the rest goes to
    :class:`difflib.SequenceMatcher` (without its "popular element" heuristic: telemetry
    repeats) when its work is small, else to Myers' algorithm when the lists differ in few
    places, else to :func:`_resync`, which is quick but may miss matches."""
    n, m = len(a), len(b)
    head = 0
    while head < min(n, m) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(n, m) - head and a[n - 1 - tail] == b[m - 1 - tail]:
        tail += 1
    middle_a, middle_b = a[head : n - tail], b[head : m - tail]
    middle: list[Match] = []
    if middle_a and middle_b:
        counts = Counter(middle_b)
        if sum(counts[item] for item in middle_a) <= MATCHER_WORK:
            matcher = difflib.SequenceMatcher(None, middle_a, middle_b, autojunk=False)
            middle = [
                (i + step, j + step)
                for i, j, size in matcher.get_matching_blocks()
                for step in range(size)
            ]
        else:
            found = _myers(middle_a, middle_b)
            middle = _resync(middle_a, middle_b) if found is None else found
    return [
        *((i, i) for i in range(head)),
        *((i + head, j + head) for i, j in middle),
        *((n - tail + i, m - tail + i) for i in range(tail)),
    ]


def _myers(a: Sequence[int], b: Sequence[int]) -> list[Match] | None:
    """A longest common subsequence by Myers' O(ND) algorithm ("An O(ND) Difference Algorithm
    and Its Variations", 1986); None if that takes more than :data:`MYERS_EDITS` insertions
    and deletions or :data:`MYERS_WORK` steps."""
    n, m = len(a), len(b)
    limit = min(MYERS_EDITS, n + m)
    middle = limit + 1  # furthest[middle + k]: the furthest x reached on diagonal k = x - y
    furthest = [0] * (2 * limit + 3)
    trace: list[list[int]] = []
    work = 0
    for edits in range(limit + 1):
        trace.append(furthest[middle - edits - 1 : middle + edits + 2])  # what step reads
        for k in range(-edits, edits + 1, 2):
            if k == -edits or (k != edits and furthest[middle + k - 1] < furthest[middle + k + 1]):
                x = furthest[middle + k + 1]  # down: b[y - 1] inserted
            else:
                x = furthest[middle + k - 1] + 1  # right: a[x - 1] deleted
            y = x - k
            start = x
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            work += x - start + 1
            furthest[middle + k] = x
            if x >= n and y >= m:
                return _myers_path(trace, n, m)
        if work > MYERS_WORK:
            return None
    return None


def _myers_path(trace: list[list[int]], n: int, m: int) -> list[Match]:
    """Walk :func:`_myers`' ``trace`` back from ``(n, m)``; return the diagonal steps."""
    matches: list[Match] = []
    x, y = n, m
    for edits in range(len(trace) - 1, 0, -1):
        furthest = trace[edits]  # furthest[edits + 1 + k] for diagonal k
        k = x - y
        if k == -edits or (k != edits and furthest[edits + k] < furthest[edits + k + 2]):
            previous_k = k + 1
        else:
            previous_k = k - 1
        previous_x = furthest[edits + 1 + previous_k]
        previous_y = previous_x - previous_k
        while x > previous_x and y > previous_y:
            x, y = x - 1, y - 1
            matches.append((x, y))
        x, y = previous_x, previous_y
    while x > 0 and y > 0:
        x, y = x - 1, y - 1
        matches.append((x, y))
    matches.reverse()
    return matches


def _resync(a: Sequence[int], b: Sequence[int]) -> list[Match]:
    """Match in order, skipping on a mismatch to the nearest place (at most
    :data:`RESYNC_WINDOW` items on) where both agree again: linear, and good enough for
    lists so different that nothing better is worth its time."""
    matches: list[Match] = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            matches.append((i, j))
            i, j = i + 1, j + 1
            continue
        skip = next(
            (
                (skip_a, total - skip_a)
                for total in range(1, RESYNC_WINDOW + 1)
                for skip_a in range(total + 1)
                if i + skip_a < len(a)
                and j + total - skip_a < len(b)
                and a[i + skip_a] == b[j + total - skip_a]
            ),
            (1, 1),
        )
        i, j = i + skip[0], j + skip[1]
    return matches


def _pair_by_similarity(
    wanted: Sequence[Mapping[str, Any]],
    got: Sequence[Mapping[str, Any]],
    wanted_kinds: Sequence[int],
    got_kinds: Sequence[int],
    *,
    start: tuple[int, int],
) -> list[Pair]:
    """Pair in order as many records as can be of ``wanted`` and ``got`` from ``start``
    (``(i1, j1)``) whose kinds (``wanted_kinds``, ``got_kinds``: as many as are to be paired) are
    equal, the most alike among equal counts (dynamic programming: small blocks only)."""
    n, m = len(wanted_kinds), len(got_kinds)
    i1, j1 = start
    pair_weight = min(n, m) + 1  # more than any sum of similarities: pairs count first
    weight: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j in range(m):
            if wanted_kinds[i] == got_kinds[j]:
                changes = record_changes(wanted[i1 + i], got[j1 + j])
                weight[i, j] = pair_weight + 1 / (1 + len(changes))
    score = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best = max(score[i - 1][j], score[i][j - 1])
            if (i - 1, j - 1) in weight:
                best = max(best, score[i - 1][j - 1] + weight[i - 1, j - 1])
            score[i][j] = best
    pairs: list[Pair] = []
    i, j = n, m
    while i or j:
        if (i - 1, j - 1) in weight and score[i][j] == score[i - 1][j - 1] + weight[i - 1, j - 1]:
            i, j = i - 1, j - 1
            pairs.append((i1 + i, j1 + j))
        elif j and (not i or score[i][j] == score[i][j - 1]):
            j -= 1
            pairs.append((None, j1 + j))
        else:
            i -= 1
            pairs.append((i1 + i, None))
    pairs.reverse()
    return pairs


# Key by key.


def _keys(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """The keys of both, the expected ones first, in their order."""
    return [*expected, *(key for key in actual if key not in expected)]


def _diff(path: str, expected: Any, actual: Any) -> Iterator[Change]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in _keys(expected, actual):
            yield from _diff(f"{path}.{key}", expected.get(key, ABSENT), actual.get(key, ABSENT))
    elif isinstance(expected, list) and isinstance(actual, list):
        for index in range(max(len(expected), len(actual))):
            yield from _diff(
                f"{path}[{index}]",
                expected[index] if index < len(expected) else ABSENT,
                actual[index] if index < len(actual) else ABSENT,
            )
    elif not _same(expected, actual):
        yield (path, expected, actual)


def _same(expected: Any, actual: Any) -> bool:
    """Exact equality, except that two NaNs are the same and a bool is not a number."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, float) and isinstance(actual, float):
        return expected == actual or (math.isnan(expected) and math.isnan(actual))
    return bool(expected == actual)


def _root(path: str) -> str:
    """The top-level key of a key path: ``fields`` for ``fields.accel[2]``."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# Descriptions.


def _numbers(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """Each record's 1-based number among the records of its type: frame 1, 2... error 1..."""
    counts: Counter[Any] = Counter()
    numbers = []
    for record in records:
        record_type = _freeze(record.get("type"))
        counts[record_type] += 1
        numbers.append(counts[record_type])
    return numbers


def _changed(
    expected: Mapping[str, Any],
    actual: Mapping[str, Any],
    index: int,
    name: str,
    changes: tuple[Change, ...],
) -> Difference:
    offset, actual_offset = _offset(expected), _offset(actual)
    return Difference(
        "changed",
        index,
        offset,
        name,
        changes,
        None if actual_offset == offset else actual_offset,
    )


def _offset(record: Mapping[str, Any]) -> int | None:
    offset = record.get("offset")
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else None


def _name(record: Mapping[str, Any], number: int | None) -> str:
    """``frame 12 (environment, cmd 16)``, ``error 3 (bad_checksum, 9 bytes)``, ``gap 4 (20
    bytes)``: the 12th frame, the 3rd error...; without the number if ``number`` is None."""
    record_type = record.get("type")
    parts: list[str] = []
    if record_type == "frame":
        parts.append(str(record.get("message") or "unknown"))
    elif record_type == "error":
        parts.append(str(record.get("kind")))
    if "cmd" in record:
        parts.append(f"cmd {record['cmd']}")
    if "address" in record:
        parts.append(f"address {record['address']}")
    if record_type in ("error", "gap") and "size" in record:
        size = record["size"]
        parts.append(f"{size} byte{'' if size == 1 else 's'}")
    name = str(record_type or "record")
    if number is not None:
        name += f" {number}"
    return f"{name} ({', '.join(parts)})" if parts else name


def _at_offset(offset: int | None) -> str:
    return "" if offset is None else f" at offset {offset}"


def _describe_change(change: Change) -> str:
    path, expected, actual = change
    if path in BYTE_KEYS and isinstance(expected, str) and isinstance(actual, str):
        first = next(
            (i for i, (x, y) in enumerate(zip(expected, actual, strict=False)) if x != y),
            min(len(expected), len(actual)),
        )
        start = max(0, first // 2 - 4) * 2  # a few bytes of context before the first change
        return (
            f"{path}: differs from byte {first // 2}: "
            f"expected {_show(expected, start)}, got {_show(actual, start)}"
        )
    return f"{path}: expected {_show(expected)}, got {_show(actual)}"


def _show(value: Any, start: int = 0) -> str:
    """``value`` as JSON (strings quoted, NaN as NaN), cut to :data:`MAX_VALUE_WIDTH`;
    a string from ``start`` on (with ``...`` for what was cut)."""
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, str) and start:
        return _cut('"...' + json.dumps(value[start:], ensure_ascii=False)[1:])
    return _cut(json.dumps(value, ensure_ascii=False, default=repr))


def _cut(text: str) -> str:
    if len(text) <= MAX_VALUE_WIDTH:
        return text
    closing = '"' if text.startswith('"') else ""
    return text[: MAX_VALUE_WIDTH - 3 - len(closing)] + "..." + closing
