"""SQLite files where the gateway keeps what survives a restart (the MQTT outbox, the
journal): opened once, exclusively, in WAL mode; a file that cannot be read is moved
aside, never deleted; written in batches by a :class:`Committer` thread."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from protocol.errors import ConfigError, os_error_reason

__all__ = ["Committer", "ErrorCounter", "insert_rows", "open_state_file"]

logger = logging.getLogger(__name__)

Work = TypeVar("Work")

UNREADABLE = {11, 26}
"""SQLite's primary result codes for a file that is no database to us: SQLITE_CORRUPT,
SQLITE_NOTADB. Any other error (a full disk, permissions) says nothing of the file."""


def open_state_file(
    path: Path,
    schema: str,
    *,
    what: str,
    source: str,
    key: str,
    in_use: str = "give each its own",
    unusable: str = "free some space or fix its permissions, or choose another file",
    errors: ErrorCounter | None = None,
) -> sqlite3.Connection:
    """Open (or make) the SQLite file ``path`` with the tables of ``schema``, for this
    process alone, in autocommit mode (callers say BEGIN and COMMIT).

    A file that is not a database, or a corrupt one, is moved aside as
    ``<name>.corrupt-<UTC time>`` and an ERROR says where (``what`` names it: "mqtt
    outbox"); an empty one is made in its place. Raise
    :class:`~protocol.errors.ConfigError` naming ``source`` and ``key`` when the folder
    cannot be made, another process holds the file (``in_use`` then says what to do),
    or the file cannot be made or written (a full disk, permissions: ``unusable``); such
    a file is left as it is.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            source, key, f"cannot make {path.parent}: {os_error_reason(exc)}"
        ) from exc
    try:
        return _connect(path, schema)
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc):
            raise ConfigError(
                source, key, f"{path} is in use by another gateway: {in_use}"
            ) from exc
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in UNREADABLE:
            raise ConfigError(source, key, f"cannot use {path} ({exc}): {unusable}") from exc
        aside = _move_aside(path)
        if errors is not None:
            errors(path.name, "unreadable")
        logger.error(
            "%s %s cannot be read (%s): moved aside to %s, starting empty",
            what,
            path,
            exc,
            aside,
        )
        return _connect(path, schema)


def _connect(path: Path, schema: str) -> sqlite3.Connection:
    database = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0.5)
    try:
        database.execute("PRAGMA locking_mode = EXCLUSIVE")
        database.execute("PRAGMA journal_mode = WAL")
        database.execute("PRAGMA synchronous = NORMAL")
        database.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now
        for statement in schema.split(";"):
            if statement.strip():
                database.execute(statement)
        database.execute("COMMIT")
        database.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError:
        database.close()
        raise
    return database


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    return aside


INSERT_CHUNK_VARIABLES = 1_500
"""Values bound per INSERT statement at most: binding holds the interpreter lock, the
statement runs without it, so the event loop gets it back between statements."""


def insert_rows(
    database: sqlite3.Connection, verb: str, table: str, rows: Sequence[tuple[object, ...]]
) -> None:
    """``verb`` (``INSERT`` or ``INSERT OR REPLACE``) ``rows`` into ``table``, many rows
    per statement.

    ``executemany`` runs one statement per row, taking the interpreter lock back for each:
    while the event loop is busy, a commit of 1,000 rows then took 266 ms of wall time
    for 24 ms of CPU (measured), and the commit window grew with it.
    """
    if not rows:
        return
    width = len(rows[0])
    chunk = max(1, INSERT_CHUNK_VARIABLES // width)
    one = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        statement = f"{verb} INTO {table} VALUES {', '.join([one] * len(part))}"
        database.execute(statement, [value for row in part for value in row])


ErrorCounter = Callable[[str, str], None]
"""Counts a state file's trouble: ``(file name, kind)``, kind ``unreadable`` (moved aside
at start) or ``write`` (a commit the disk refused); ``GatewayMetrics.state_file_error``."""


class Committer(Generic[Work]):
    """A thread that commits a state file's pending work: within ``interval`` seconds of
    :meth:`pending`, at once on :meth:`wake`, once more on :meth:`stop`; then it closes
    ``database``. With nothing pending it sleeps: an idle gateway does not wake it.

    ``take()`` is called with ``lock`` held: it hands over the work pending (None when
    there is none); ``commit(work)`` then runs without the lock, in the thread, and says
    whether it succeeded: a failed commit (its work handed back by ``commit``) is tried
    again an interval later.
    """

    def __init__(
        self,
        name: str,
        database: sqlite3.Connection,
        lock: threading.Lock,
        *,
        interval: float,
        take: Callable[[], Work | None],
        commit: Callable[[Work], bool],
        errors: ErrorCounter | None = None,
        file: str = "",
    ) -> None:
        self._database = database
        self._errors = errors
        self._file = file
        self._wake = threading.Condition(lock)
        self._interval = interval
        self._take = take
        self._commit = commit
        self._pending = False
        self._woken = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def pending(self) -> None:
        """There is work to commit within the interval. Call it (from any thread, without
        ``lock``) after making the work visible to ``take``: it takes the lock only when
        the thread sleeps, not once per message."""
        if self._pending:  # the thread resets it before it takes: the work will be seen
            return
        with self._wake:
            self._pending = True
            self._wake.notify()

    def wake(self) -> None:
        """Commit now rather than at the end of the interval (from any thread, without
        ``lock``)."""
        with self._wake:
            self._pending = self._woken = True
            self._wake.notify()

    def stop(self, timeout: float) -> bool:
        """Commit what is pending and end the thread; say if it ended within ``timeout``."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        wake = self._wake
        try:
            while True:
                with wake:
                    wake.wait_for(lambda: self._stopping or self._pending)
                    # gather what comes within the interval into one transaction
                    wake.wait_for(lambda: self._stopping or self._woken, self._interval)
                    self._pending = self._woken = False
                    work = self._take()
                    stopping = self._stopping
                if work is not None and not self._commit(work):
                    if self._errors is not None:
                        self._errors(self._file, "write")
                    with wake:
                        self._pending = True
                if stopping:
                    return
        finally:
            self._database.close()
