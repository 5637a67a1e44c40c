"""What the records of a run say: pure functions over the device's ground truth and the
envelopes a subscriber got.

The device's truth (fwsim ``--truth``) lists every frame it wrote, with the frame's
bytes; the gateway's envelopes carry the bytes they were decoded from (``raw``). A
frame *arrived* when an envelope with its bytes did; frames are matched by their bytes
(each frame of the ``addressed-crc16`` profile carries a sequence byte and a CRC, and
frames with equal bytes are interchangeable for counting). The envelopes' ``seq``
says the gateway's order and its duplicates.
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.fault_suite.observers import Arrival

__all__ = [
    "Matching",
    "ReplugLosses",
    "SeqTally",
    "Truth",
    "TruthFrame",
    "Window",
    "classify_replug_losses",
    "envelopes_in_state_file",
    "first_arrivals",
    "match_frames",
    "percentile",
    "read_truth",
    "reconnect_delays",
    "tally_seqs",
]


@dataclass(frozen=True, slots=True)
class TruthFrame:
    """A frame the device wrote: its place in the run, when, and its bytes (hex)."""

    index: int
    time: float
    """Seconds since the device started (its clock)."""
    raw: str


@dataclass(frozen=True, slots=True)
class Window:
    """A time the device was unplugged, in seconds since it started."""

    start: float
    end: float
    skipped: int
    """Frames that fell due meanwhile and were never sent."""


@dataclass(frozen=True, slots=True)
class Truth:
    frames: tuple[TruthFrame, ...]
    windows: tuple[Window, ...]


def read_truth(path: Path) -> Truth:
    """The frames and unplugged windows of fwsim's ``--truth`` file."""
    frames: list[TruthFrame] = []
    windows: list[Window] = []
    with path.open("rb") as lines:
        for line in lines:
            record = json.loads(line)
            if record["type"] == "frame":
                frames.append(TruthFrame(len(frames), float(record["time"]), str(record["raw"])))
            elif record.get("kind") == "disconnect":
                start = float(record["time"])
                duration = float(record["duration"])
                windows.append(Window(start, start + duration, int(record["skipped"])))
    return Truth(tuple(frames), tuple(windows))


def first_arrivals(arrivals: Iterable[Arrival]) -> list[Arrival]:
    """Each distinct envelope once (same bytes: the same message sent again), in the
    order of first arrival."""
    seen: set[bytes] = set()
    firsts = []
    for arrival in arrivals:
        if arrival.payload not in seen:
            seen.add(arrival.payload)
            firsts.append(arrival)
    return firsts


@dataclass(frozen=True, slots=True)
class SeqTally:
    """The envelopes a subscriber got, by their ``seq``."""

    arrivals: int
    distinct: int
    """Distinct seqs."""
    duplicates: int
    """Arrivals whose seq had arrived before."""
    conflicting: int
    """Duplicates whose bytes differ from the first arrival's: one seq, two messages."""
    out_of_order: int
    """First arrivals whose seq is below that of an earlier first arrival."""
    gaps: int
    """Seqs missing between the lowest and the highest that arrived."""


def tally_seqs(arrivals: Sequence[Arrival]) -> SeqTally:
    """Count duplicates, conflicts, disorder and gaps in ``arrivals`` (in arrival order)."""
    first: dict[int, bytes] = {}
    duplicates = conflicting = out_of_order = 0
    highest = -math.inf
    for arrival in arrivals:
        known = first.get(arrival.seq)
        if known is not None:
            duplicates += 1
            conflicting += known != arrival.payload
            continue
        first[arrival.seq] = arrival.payload
        if arrival.seq < highest:
            out_of_order += 1
        highest = max(highest, arrival.seq)
    gaps = max(first) - min(first) + 1 - len(first) if first else 0
    return SeqTally(len(arrivals), len(first), duplicates, conflicting, out_of_order, gaps)


@dataclass(frozen=True, slots=True)
class Matching:
    """Which of the device's frames arrived."""

    arrived: dict[int, Arrival]
    """Truth index -> the (first) envelope of that frame."""
    foreign: int
    """Envelopes whose bytes the device never sent (none, unless something is broken)."""
    first: int | None
    """The lowest truth index that arrived: frames before it were written before the
    gateway first read the port, and are outside what the run counts."""

    def missing(self, frames: Sequence[TruthFrame]) -> list[int]:
        """Truth indexes from :attr:`first` on that never arrived."""
        if self.first is None:
            return [frame.index for frame in frames]
        return [f.index for f in frames[self.first :] if f.index not in self.arrived]


def match_frames(frames: Sequence[TruthFrame], arrivals: Iterable[Arrival]) -> Matching:
    """Match each envelope (first arrival of each, by bytes) to a frame the device sent.

    Frames with equal bytes do occur (the sequence byte wraps every 256 frames, and a
    device at rest sends the same values): each envelope takes the first unmatched
    frame with its bytes at or after the last frame matched, since the gateway keeps
    the device's order; only if there is none, an earlier one.
    """
    positions: dict[str, list[int]] = defaultdict(list)
    for frame in frames:
        positions[frame.raw].append(frame.index)
    arrived: dict[int, Arrival] = {}
    foreign = 0
    cursor = 0
    for arrival in first_arrivals(arrivals):
        candidates = positions.get(arrival.raw, [])
        split = bisect.bisect_left(candidates, cursor)
        later = (index for index in candidates[split:] if index not in arrived)
        earlier = (index for index in candidates[:split] if index not in arrived)
        chosen = next(later, None)
        if chosen is None:
            chosen = next(earlier, None)
        if chosen is None:
            foreign += 1
            continue
        arrived[chosen] = arrival
        cursor = max(cursor, chosen + 1)
    return Matching(arrived, foreign, min(arrived, default=None))


@dataclass(frozen=True, slots=True)
class ReplugLosses:
    """Frames of an unplug-replug run that never arrived, by where they were sent."""

    after_return: int
    """Sent after the device came back, before the first frame that arrived from it."""
    before_unplug: int
    """Sent just before an unplug, after the last frame that arrived: bytes still in
    the port when it vanished (a real adapter loses them too)."""
    other: int
    """Anywhere else: between two frames that arrived."""
    returns_without_frames: int
    """Returns after which no frame at all arrived before the next unplug."""


def _segments(frames: Sequence[TruthFrame], windows: Sequence[Window]) -> list[list[TruthFrame]]:
    """The frames of each plugged-in period: before the first window, between windows,
    after the last."""
    segments: list[list[TruthFrame]] = [[] for _ in range(len(windows) + 1)]
    index = 0
    for frame in frames:
        while index < len(windows) and frame.time >= windows[index].start:
            index += 1
        segments[index].append(frame)
    return segments


def classify_replug_losses(
    frames: Sequence[TruthFrame], windows: Sequence[Window], matching: Matching
) -> ReplugLosses:
    """Where the frames that never arrived were sent, plugged period by plugged period
    (the first one starts at the first frame that arrived)."""
    after_return = before_unplug = other = empty = 0
    start = matching.first if matching.first is not None else len(frames)
    for number, segment in enumerate(_segments(frames[start:], windows)):
        got = [i for i, frame in enumerate(segment) if frame.index in matching.arrived]
        lost = len(segment) - len(got)
        if not got:
            empty += number > 0 and bool(segment)
            after_return += lost
            continue
        head, tail = got[0], len(segment) - 1 - got[-1]
        after_return += head
        before_unplug += tail if number < len(windows) else 0
        other += lost - head - (tail if number < len(windows) else 0)
    return ReplugLosses(after_return, before_unplug, other, empty)


def reconnect_delays(
    frames: Sequence[TruthFrame], windows: Sequence[Window], matching: Matching
) -> list[float]:
    """Seconds from each return of the device to the gateway's reading of the first
    frame that arrived after it (returns followed by no frame are left out).

    The device's clock is put on the gateway's by the smallest difference between a
    frame's envelope time and its truth time (the fastest frame of the run).
    """
    if not matching.arrived:
        return []
    offset = min(arrival.time - frames[index].time for index, arrival in matching.arrived.items())
    delays = []
    for window, segment in zip(windows, _segments(frames, windows)[1:], strict=True):
        first = next((f for f in segment if f.index in matching.arrived), None)
        if first is not None:
            delays.append(matching.arrived[first.index].time - offset - window.end)
    return delays


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` 0.5 for the median); nan if
    there is none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def envelopes_in_state_file(paths: Sequence[Path]) -> list[bytes]:
    """Every envelope kept in a SQLite state file, whatever its tables: each value that
    is an envelope's JSON (``"type": "message"``).

    ``paths``: the database and its ``-wal`` (and ``-shm``) files, as the gateway left
    them. They are copied first, so reading (which applies the WAL) changes nothing.
    """
    database = next((path for path in paths if path.suffix == ".sqlite"), None)
    if database is None or not database.exists():
        return []
    found = []
    with tempfile.TemporaryDirectory(prefix="tgw-faults-") as folder:
        for path in paths:
            if path.exists():
                (Path(folder) / path.name).write_bytes(path.read_bytes())
        connection = sqlite3.connect(Path(folder) / database.name)
        try:
            tables = [
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                for row in connection.execute(f'SELECT * FROM "{table}"'):
                    found += [data for value in row if (data := _is_envelope(value)) is not None]
        finally:
            connection.close()
    return found


def _is_envelope(value: object) -> bytes | None:
    """``value`` as bytes if it is an envelope's JSON, else None."""
    data = value.encode() if isinstance(value, str) else value
    if not isinstance(data, bytes) or not data.startswith(b"{"):
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None
    return data if isinstance(document, dict) and document.get("type") == "message" else None
