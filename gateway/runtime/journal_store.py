"""The journal on disk: the sequence number and the newest messages survive a restart.

:class:`JournalStore` keeps, in a SQLite file (:mod:`gateway.runtime.state_file`), the
last sequence number given and the newest ``history`` messages, so that a gateway that
restarts numbers on from where it stopped and a client resuming with ``since`` gets what
it missed. A thread of its own writes, one transaction every ``commit_interval``
seconds: what a power cut can lose is the messages of that last interval.

Numbers are never given twice, even by a run that was killed: every commit also writes
a *reserved* bound, :data:`RESERVE` numbers ahead of the last one (hi-lo), and a clean
close says it was clean. After an unclean stop the next run numbers on from the reserved
bound: the numbers between the last commit and the bound are skipped, never reused, and
are reported as :attr:`JournalStore.uncertain` (the journal tells a resuming client).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import NamedTuple

from gateway.runtime.state_file import Committer, ErrorCounter, insert_rows, open_state_file

__all__ = ["RESERVE", "JournalStore", "Span"]

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uncertain (
    first INTEGER PRIMARY KEY,
    last INTEGER NOT NULL
)
"""
RESERVE = 1_000_000
"""How far ahead of the last committed seq each commit reserves numbers: 50 s of
messages at 20,000 a second, a thousand commit intervals of 50 ms. Numbering past the
bound (the disk refused writes that long) is logged; after an unclean stop, up to this
many numbers are skipped."""
CLOSE_TIMEOUT = 10.0
"""Seconds :meth:`JournalStore.close` waits for the last commit."""

Entry = tuple[int, str, bytes]


class Span(NamedTuple):
    """Sequence numbers ``first`` to ``last``, both included."""

    first: int
    last: int


class _Work(NamedTuple):
    pending: list[Entry]
    closing: bool


class JournalStore:
    """The journal's sequence number and newest ``history`` messages, in the file ``path``.

    :attr:`last_seq` is the number to go on from, :attr:`entries` the history the
    previous runs left and :attr:`uncertain` the numbers that runs which stopped
    uncleanly may have given to messages that are not in it. Hand every new message to
    :meth:`append` (from one thread), and call :meth:`close` at the end: only then is
    the stop clean. Each commit reserves the ``reserve`` numbers after its last one
    (default :data:`RESERVE`). Raise :class:`~protocol.errors.ConfigError` if the file
    is taken by another gateway, or it or its folder cannot be made.

    If the disk refuses to write, numbering goes on regardless (never blocked), and it
    is logged: should the gateway then be killed before a write succeeds, the numbers
    given since the last successful one may be given again.
    """

    def __init__(
        self,
        path: Path,
        *,
        history: int,
        commit_interval: float = 0.05,
        reserve: int = RESERVE,
        source: str = "configuration",
        errors: ErrorCounter | None = None,
    ) -> None:
        if reserve < 1:
            raise ValueError(f"reserve of {reserve} numbers, expected 1 or more")
        self.path = path
        self.history = history
        self.commit_interval = commit_interval
        self.reserve = reserve
        self._database = open_state_file(
            path,
            SCHEMA,
            what="journal",
            source=source,
            key="state_dir",
            in_use="give each gateway its own state directory (tgw run --state-dir DIR)",
            unusable="free some space or fix its permissions, or choose another state "
            "directory (tgw run --state-dir DIR) or none (--no-state)",
            errors=errors,
        )
        self._lock = threading.Lock()
        self._pending: deque[Entry] = deque()
        """Appended since the last commit: by the loop, drained by the thread."""
        self._closing = False
        self._last_error: str | None = None
        self._beyond_reserve = False
        self._committed = 0
        """The last seq on disk (the committing thread's, once it runs)."""
        self.last_seq, self.entries, self.uncertain = self._load()
        self._reserved = self._reserve(self.uncertain[-1] if self.uncertain else None)
        """The reserved bound on disk: numbers up to it are never given again."""
        self._committer = Committer(
            "journal",
            self._database,
            self._lock,
            interval=commit_interval,
            take=self._take,
            commit=self._commit,
            errors=errors,
            file=path.name,
        )

    @property
    def committed_seq(self) -> int:
        """The last seq on disk, as of the latest commit (the committing thread's)."""
        return self._committed

    def append(self, seq: int, topic: str, payload: bytes) -> None:
        """Keep message ``seq``; it is on disk after the next commit. Never blocks long."""
        if seq > self._reserved and not self._beyond_reserve:
            self._beyond_reserve = True
            logger.warning(
                "journal %s: seq %d is beyond the reserved bound %d (the disk has not taken "
                "a write): if the gateway is killed now, numbers may be given again",
                self.path,
                seq,
                self._reserved,
            )
        self._pending.append((seq, topic, payload))
        self._committer.pending()

    def close(self) -> None:
        """Commit what is pending, record a clean stop and stop the thread (waiting at
        most CLOSE_TIMEOUT s). Call it once, after the last :meth:`append`."""
        with self._lock:
            self._closing = True
        if not self._committer.stop(CLOSE_TIMEOUT):
            logger.warning("journal %s: the last commit did not finish in time", self.path)

    def _load(self) -> tuple[int, list[Entry], list[Span]]:
        database = self._database
        meta = dict(database.execute("SELECT key, value FROM meta").fetchall())
        last_seq = self._committed = int(meta.get("last_seq", 0))
        rows = database.execute(
            "SELECT seq, topic, payload FROM history ORDER BY seq DESC LIMIT ?", (self.history,)
        ).fetchall()
        entries = [(int(seq), str(topic), bytes(payload)) for seq, topic, payload in rows[::-1]]
        uncertain = [
            Span(int(first), int(last))
            for first, last in database.execute("SELECT first, last FROM uncertain ORDER BY first")
        ]
        reserved = int(meta.get("reserved", last_seq))
        if not meta.get("clean", 1) and reserved > last_seq:
            logger.warning(
                "journal %s: the previous run did not stop cleanly: numbering on from seq %d "
                "(seqs %d to %d are skipped, never reused; some of them may have been given "
                "to messages that are not in the history)",
                self.path,
                reserved,
                last_seq + 1,
                reserved,
            )
            uncertain.append(Span(last_seq + 1, reserved))
            last_seq = reserved
        elif last_seq:
            logger.info(
                "journal %s: numbering on from seq %d, %d messages of history kept",
                self.path,
                last_seq,
                len(entries),
            )
        return last_seq, entries, uncertain

    def _reserve(self, uncertain: Span | None) -> int:
        """Write, before any number is given, that this run numbers on from
        :attr:`last_seq` and has not stopped cleanly, with ``uncertain``, the newest span
        of skipped numbers (written again if it is an old one); return the reserved bound
        now on disk."""
        database = self._database
        start = self.last_seq
        reserved = start + self.reserve
        try:
            database.execute("BEGIN")
            if uncertain is not None:
                database.execute("INSERT OR REPLACE INTO uncertain VALUES (?, ?)", uncertain)
            database.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("last_seq", start), ("reserved", reserved), ("clean", 0)],
            )
            database.execute("COMMIT")
        except sqlite3.Error as exc:
            if database.in_transaction:
                database.execute("ROLLBACK")
            self._last_error = str(exc)
            logger.warning(
                "journal %s: cannot reserve numbers (%s): numbering on from seq %d "
                "regardless; until a write succeeds, a killed gateway may give them again",
                self.path,
                exc,
                start,
            )
            return start
        self._committed = start
        return reserved

    def _take(self) -> _Work | None:
        """The messages appended since the last commit (the lock is held), or None."""
        queue = self._pending
        pending = [queue.popleft() for _ in range(len(queue))]
        if not pending and not self._closing:
            return None
        return _Work(pending, self._closing)

    def _commit(self, work: _Work) -> bool:
        pending = work.pending
        last = pending[-1][0] if pending else max(self._committed, self.last_seq)
        rows = pending[-self.history :] if self.history else []
        meta = [("last_seq", last), ("reserved", last + self.reserve)]
        if work.closing:
            meta.append(("clean", 1))
        database = self._database
        try:
            database.execute("BEGIN")
            if rows:
                insert_rows(database, "INSERT OR REPLACE", "history", rows)
                database.execute(
                    "DELETE FROM history WHERE seq < "
                    "(SELECT seq FROM history ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (self.history - 1,),
                )
                database.execute(
                    "DELETE FROM uncertain WHERE last < (SELECT MIN(seq) - 1 FROM history)"
                )
            elif pending and not self.history:
                database.execute("DELETE FROM history")
                database.execute(
                    "DELETE FROM uncertain WHERE last < (SELECT MAX(last) FROM uncertain)"
                )
            database.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
            database.execute("COMMIT")
        except sqlite3.Error as exc:
            if database.in_transaction:
                database.execute("ROLLBACK")
            queue = self._pending  # tried again with the next commit, the newest kept
            queue.extendleft(reversed(pending))
            for _ in range(len(queue) - max(self.history, 1)):
                queue.popleft()
            if str(exc) != self._last_error:
                logger.warning("journal %s: cannot write (%s); will try again", self.path, exc)
            self._last_error = str(exc)
            return False
        self._committed = last
        self._reserved = last + self.reserve
        self._beyond_reserve = False
        if self._last_error is not None:
            logger.info("journal %s: writing again", self.path)
            self._last_error = None
        return True
