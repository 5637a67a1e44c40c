"""The fault suite's counting, on records written by hand: what it calls lost, duplicated,
out of order, and where a replug lost its frames."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from scripts.fault_suite.analysis import (
    ReplugLosses,
    SeqTally,
    TruthFrame,
    Window,
    classify_replug_losses,
    envelopes_in_state_file,
    match_frames,
    percentile,
    read_truth,
    reconnect_delays,
    tally_seqs,
)
from scripts.fault_suite.observers import Arrival, envelope_arrival
from scripts.fault_suite.parts import sum_samples
from scripts.fault_suite.report import Result, format_table


def envelope(seq: int, raw: str = "", time: float = 0.0) -> bytes:
    return json.dumps({"type": "message", "seq": seq, "raw": raw, "time": time}).encode()


def arrival(seq: int, raw: str = "", time: float = 0.0, *, payload: bytes | None = None) -> Arrival:
    return Arrival(seq, payload or envelope(seq, raw, time), raw, time, 0.0)


def frames(*raws: str, step: float = 0.01) -> list[TruthFrame]:
    return [TruthFrame(index, index * step, raw) for index, raw in enumerate(raws)]


@pytest.mark.parametrize(
    ("seqs", "expected"),
    [
        ([1, 2, 3], SeqTally(3, 3, 0, 0, 0, 0)),
        ([1, 2, 2, 3], SeqTally(4, 3, 1, 0, 0, 0)),  # sent again after a cut
        ([1, 3, 2], SeqTally(3, 3, 0, 0, 1, 0)),
        ([1, 2, 4], SeqTally(3, 3, 0, 0, 0, 1)),
        ([], SeqTally(0, 0, 0, 0, 0, 0)),
    ],
    ids=["in-order", "duplicate", "out-of-order", "gap", "nothing"],
)
def test_seqs_are_tallied(seqs: list[int], expected: SeqTally) -> None:
    assert tally_seqs([arrival(seq) for seq in seqs]) == expected


def test_one_seq_on_two_messages_is_a_conflict() -> None:
    got = [arrival(7, "aa"), arrival(8, "bb"), arrival(7, "cc")]  # seq 7 given twice
    assert tally_seqs(got) == SeqTally(3, 2, 1, 1, 0, 0)


def test_frames_with_equal_bytes_are_matched_in_the_devices_order() -> None:
    truth = frames("0f", "aa", "bb", "aa", "cc")
    got = [arrival(1, "0f"), arrival(2, "bb"), arrival(3, "aa"), arrival(4, "cc")]
    matching = match_frames(truth, got)
    assert matching.missing(truth) == [1]  # the first "aa", not the second
    assert matching.foreign == 0


def test_a_message_sent_twice_is_matched_once_and_unknown_bytes_are_foreign() -> None:
    truth = frames("aa", "bb", "cc")
    got = [arrival(1, "aa"), arrival(2, "bb"), arrival(2, "bb"), arrival(3, "ee")]
    matching = match_frames(truth, got)
    assert sorted(matching.arrived) == [0, 1]
    assert matching.missing(truth) == [2]
    assert matching.foreign == 1


def test_frames_written_before_the_first_arrival_are_not_counted() -> None:
    truth = frames("aa", "bb", "cc", "dd", "ee")
    matching = match_frames(truth, [arrival(1, "cc"), arrival(2, "ee")])
    assert matching.first == 2
    assert matching.missing(truth) == [3]
    assert match_frames(truth, []).missing(truth) == [0, 1, 2, 3, 4]


def replug_run(received: Sequence[int]) -> tuple[list[TruthFrame], list[Window], list[Arrival]]:
    """Frames at 0.0-0.3 s, 0.5-0.8 s and 1.0-1.3 s, unplugged 0.4-0.5 and 0.9-1.0 s."""
    truth = [
        TruthFrame(index, time, f"{index:02x}")
        for index, time in enumerate([0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0, 1.1, 1.2, 1.3])
    ]
    windows = [Window(0.4, 0.5, 0), Window(0.9, 1.0, 0)]
    got = [arrival(n, truth[n].raw, 100.0 + truth[n].time + 0.001) for n in received]
    return truth, windows, got


@pytest.mark.parametrize(
    ("received", "expected"),
    [
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], ReplugLosses(0, 0, 0, 0)),
        ([0, 1, 2, 3, 6, 7, 9, 10, 11], ReplugLosses(3, 0, 0, 0)),  # after each return
        ([0, 1, 2, 4, 5, 6, 8, 9, 10, 11], ReplugLosses(0, 2, 0, 0)),  # before each unplug
        ([0, 1, 3, 4, 6, 7, 8, 9, 10, 11], ReplugLosses(0, 0, 2, 0)),  # in the middle
        ([0, 1, 2, 3, 8, 9, 10, 11], ReplugLosses(4, 0, 0, 1)),  # nothing after a return
        ([2, 3, 4, 5, 6, 7, 8, 9, 10], ReplugLosses(0, 0, 1, 0)),  # before the first: uncounted
    ],
    ids=["none", "after-return", "before-unplug", "middle", "silent-return", "ends"],
)
def test_replug_losses_are_placed(received: list[int], expected: ReplugLosses) -> None:
    truth, windows, got = replug_run(received)
    assert classify_replug_losses(truth, windows, match_frames(truth, got)) == expected


def test_reconnect_delays_run_from_the_return_to_the_first_frame_read() -> None:
    truth, windows, got = replug_run([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11])
    delays = reconnect_delays(truth, windows, match_frames(truth, got))
    # the clocks line up on the fastest frame: every frame here took 1 ms
    assert delays == pytest.approx([0.1, 0.0])


def test_percentiles_are_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))


def test_the_truth_file_gives_frames_and_unplugged_windows(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    records = [
        {"type": "frame", "time": 0.5, "raw": "aa55", "fault": None},
        {"type": "fault", "kind": "disconnect", "time": 1.0, "duration": 0.25, "skipped": 3},
        {"type": "fault", "kind": "noise", "offset": 4, "size": 2},
        {"type": "frame", "time": 1.5, "raw": "aa66", "fault": None},
    ]
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    truth = read_truth(path)
    assert truth.frames == (TruthFrame(0, 0.5, "aa55"), TruthFrame(1, 1.5, "aa66"))
    assert truth.windows == (Window(1.0, 1.25, 3),)


def test_envelopes_are_read_from_a_state_file_and_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    database = sqlite3.connect(path, isolation_level=None)
    database.execute("PRAGMA journal_mode = WAL")
    database.execute("PRAGMA wal_autocheckpoint = 0")  # what the gateway left: in the WAL
    database.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, topic TEXT, payload BLOB)")
    kept = [envelope(1, "aa"), envelope(2, "bb")]
    database.executemany(
        "INSERT INTO messages (topic, payload) VALUES (?, ?)",
        [("tgw/node/motion", kept[0]), ("tgw/node/motion", kept[1].decode())],
    )
    files = [path, tmp_path / "outbox.sqlite-wal", tmp_path / "outbox.sqlite-shm"]
    try:
        assert envelopes_in_state_file(files) == kept
    finally:
        database.close()
    assert envelopes_in_state_file([tmp_path / "absent.sqlite"]) == []


def test_reading_a_state_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    database = sqlite3.connect(path, isolation_level=None)
    database.execute("PRAGMA journal_mode = WAL")
    database.execute("PRAGMA wal_autocheckpoint = 0")
    database.execute("CREATE TABLE messages (payload BLOB)")
    database.execute("INSERT INTO messages VALUES (?)", (envelope(1),))
    wal = tmp_path / "outbox.sqlite-wal"
    files = [path, wal, tmp_path / "outbox.sqlite-shm"]
    before = {file: file.read_bytes() for file in files[:2]}
    assert envelopes_in_state_file(files) == [envelope(1)]
    assert {file: file.read_bytes() for file in files[:2]} == before
    database.close()


def test_only_envelopes_are_arrivals() -> None:
    got = envelope_arrival(envelope(5, "aa55", 12.5))
    assert got is not None
    assert (got.seq, got.raw, got.time) == (5, "aa55", 12.5)
    assert envelope_arrival(b"online") is None
    assert envelope_arrival(b'{"type": "status", "online": true}') is None


def test_metric_samples_are_summed_by_labels() -> None:
    text = (
        "# HELP tgw_x_total x\n"
        'tgw_x_total{file="a.sqlite",kind="write"} 2.0\n'
        'tgw_x_total{file="b.sqlite",kind="write"} 3.0\n'
        'tgw_x_total{file="b.sqlite",kind="unreadable"} 1.0\n'
        "tgw_x_created 1.7e9\n"
        "tgw_y 4.0\n"
    )
    assert sum_samples(text, "tgw_x_total", {"kind": "write"}) == 5.0
    assert sum_samples(text, "tgw_x_total", {}) == 6.0
    assert sum_samples(text, "tgw_y", {}) == 4.0
    assert sum_samples(text, "tgw_z", {}) == 0.0


def test_the_table_shows_figures_then_verdicts(tmp_path: Path) -> None:
    result = Result("broker away", tmp_path)
    result.figure("frames lost", 0)
    result.figure("backlog", 12345)
    result.check("0 lost", True, "0 lost")
    result.check("0 out of order", False, "2 out of order")
    assert format_table([result]).splitlines() == [
        "broker away",
        "-----------",
        "  frames lost     0",
        "  backlog         12,345",
        "  0 lost          PASS  0 lost",
        "  0 out of order  FAIL  2 out of order",
        "",
        "0 of 1 scenarios passed",
    ]
    [failure, where] = result.failures().splitlines()
    assert failure == "broker away: 0 out of order: FAILED (2 out of order)"
    assert where == f"(logs, truth and state in {tmp_path})"
