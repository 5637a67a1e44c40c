"""The journal: numbering, one serialisation, bounded history, latest statuses.

Moved from the hub's tests when numbering and history left the hub.
"""

from __future__ import annotations

import orjson
import pytest

from gateway.runtime.envelope import Envelope
from gateway.runtime.journal import Gap, Journal, Resume
from gateway.runtime.status import DeviceStatus
from protocol.events import Frame


def envelope(device: str = "node-1", message: str = "environment") -> Envelope:
    frame = Frame(
        offset=0, cmd=0x10, message=message, fields={"humidity": 40.0}, payload=b"", raw=b""
    )
    return Envelope(device, frame, received=1764063421.5)


def test_append_numbers_messages_from_one() -> None:
    journal = Journal(history=10)
    assert journal.last_seq == 0
    published = [journal.append(envelope()) for _ in range(3)]
    assert [item.seq for item in published] == [1, 2, 3]
    assert journal.last_seq == 3
    resume = journal.since(0)
    assert resume.complete
    entries = resume.entries
    assert [(seq, topic) for seq, topic, _ in entries] == [
        (1, "node-1/environment"),
        (2, "node-1/environment"),
        (3, "node-1/environment"),
    ]
    assert [item.payload for item in published] == [payload for _, _, payload in entries]
    record = orjson.loads(entries[2][2])
    assert record["type"] == "message"
    assert record["seq"] == 3
    assert record["device"] == "node-1"
    assert record["message"] == "environment"
    assert record["fields"]["humidity"] == pytest.approx(40.0)


def seqs(resume: Resume) -> list[int]:
    return [seq for seq, _, _ in resume.entries]


def test_history_is_bounded_and_since_reports_gaps() -> None:
    journal = Journal(history=5)
    assert journal.since(0).complete
    assert journal.since(0).entries == []
    for _ in range(12):
        journal.append(envelope())
    assert journal.oldest_seq == 8
    resume = journal.since(0)
    assert seqs(resume) == [8, 9, 10, 11, 12]
    assert resume.gaps == (Gap(1, 7, uncertain=False),)
    assert not resume.complete
    resume = journal.since(6)
    assert seqs(resume) == [8, 9, 10, 11, 12]
    assert resume.gaps == (Gap(7, 7, uncertain=False),)
    resume = journal.since(7)
    assert seqs(resume) == [8, 9, 10, 11, 12]
    assert resume.complete
    resume = journal.since(10)
    assert seqs(resume) == [11, 12]
    assert resume.complete
    assert journal.since(12).complete
    assert journal.since(12).entries == []
    # Ahead of the last seq: the client saw an earlier run of the gateway.
    resume = journal.since(500)
    assert seqs(resume) == [8, 9, 10, 11, 12]
    assert resume.ahead
    assert not resume.complete
    with pytest.raises(ValueError, match="seq -1"):
        journal.since(-1)


def test_no_history() -> None:
    journal = Journal(history=0)
    journal.append(envelope())
    assert journal.since(0).gaps == (Gap(1, 1, uncertain=False),)
    assert journal.since(1).complete
    assert journal.oldest_seq == 2


def test_the_latest_status_of_each_device_is_kept() -> None:
    journal = Journal(history=10)
    journal.record_status(DeviceStatus("node-2", False, "silent for 10 s", 1.0))
    journal.record_status(DeviceStatus("node-1", True, "frames", 2.0))
    journal.record_status(DeviceStatus("node-1", False, "port closed", 3.0))
    statuses = journal.statuses()
    assert statuses == {
        "node-1": DeviceStatus("node-1", False, "port closed", 3.0),
        "node-2": DeviceStatus("node-2", False, "silent for 10 s", 1.0),
    }
    statuses.clear()
    assert len(journal.statuses()) == 2  # a copy
    assert journal.last_seq == 0
    assert journal.since(0).complete
