"""The committing thread of the state files: it batches, retries, and sleeps when idle."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.runtime.state_file import Committer, insert_rows

GUARD = 10.0


def committer(
    tmp_path: Path, interval: float, outcomes: list[bool]
) -> tuple[Committer[int], Callable[[int], None], list[int], list[int]]:
    """A committer whose work is a count of pending items; ``outcomes`` say whether each
    commit succeeds (then True). Returns it, a function that adds pending items, the
    take calls and the commits."""
    lock = threading.Lock()
    pending = [0]
    takes: list[int] = []
    commits: list[int] = []

    def take() -> int | None:
        takes.append(pending[0])
        work, pending[0] = pending[0], 0
        return work or None

    def commit(work: int) -> bool:
        done = outcomes.pop(0) if outcomes else True
        if done:
            commits.append(work)
        else:
            with lock:
                pending[0] += work  # handed back, as the state files do
        return done

    database = sqlite3.connect(tmp_path / "state.sqlite", check_same_thread=False)
    thread = Committer("test", database, lock, interval=interval, take=take, commit=commit)

    def add(count: int) -> None:
        with lock:
            pending[0] += count
        thread.pending()

    return thread, add, takes, commits


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {GUARD} s"
        time.sleep(0.005)


def test_an_idle_committer_sleeps_and_work_is_committed_in_one_batch(tmp_path: Path) -> None:
    thread, add, takes, commits = committer(tmp_path, 0.01, [])
    time.sleep(0.2)  # twenty intervals with nothing pending
    assert takes == []  # it did not wake
    for _ in range(3):
        add(1)
    wait_for(lambda: commits, "a commit")
    assert thread.stop(GUARD)
    assert sum(commits) == 3


def test_a_failed_commit_is_tried_again_an_interval_later(tmp_path: Path) -> None:
    thread, add, _, commits = committer(tmp_path, 0.01, [False, False])
    add(5)
    wait_for(lambda: commits, "the third attempt")
    assert commits == [5]
    assert thread.stop(GUARD)


def test_stop_commits_what_is_pending(tmp_path: Path) -> None:
    thread, add, _, commits = committer(tmp_path, 60.0, [])
    add(2)
    assert thread.stop(GUARD)
    assert commits == [2]


def test_insert_rows_inserts_every_row_across_statements(tmp_path: Path) -> None:
    database = sqlite3.connect(tmp_path / "rows.sqlite")
    database.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB)")
    rows = [(n, str(n), bytes([n % 256])) for n in range(2_001)]  # several statements
    insert_rows(database, "INSERT", "t", rows)
    insert_rows(database, "INSERT OR REPLACE", "t", [(0, "zero", b"")])
    insert_rows(database, "INSERT", "t", [])
    got = database.execute("SELECT a, b, c FROM t ORDER BY a").fetchall()
    assert got == [(0, "zero", b""), *rows[1:]]
