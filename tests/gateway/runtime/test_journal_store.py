"""The journal on disk: numbering and history go on across restarts, within the
history's size; a dashboard resuming after a restart gets what it missed."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from gateway.config import GatewayConfig, WebSocketConfig
from gateway.runtime.envelope import Envelope
from gateway.runtime.gateway import Gateway
from gateway.runtime.journal import Gap, Journal
from gateway.runtime.journal_store import RESERVE, JournalStore
from protocol.errors import ConfigError
from protocol.events import Frame
from tests.fwsim.helpers import simulator
from tests.gateway.broker import free_port
from tests.gateway.test_gateway import FAST, GUARD, TGW, receive_until, wait_healthy


def envelope(number: int) -> Envelope:
    frame = Frame(
        offset=0, cmd=16, message="environment", fields={"n": number}, payload=b"", raw=b""
    )
    return Envelope("node-1", frame, received=float(number))


def run_once(path: Path, history: int, numbers: range) -> list[int]:
    """One run of a gateway: append ``numbers``, close; return the seqs given."""
    journal = Journal(history=history, store=JournalStore(path, history=history))
    seqs = [journal.append(envelope(number)).seq for number in numbers]
    journal.close()
    return seqs


@pytest.mark.parametrize("history", [0, 3, 100])
def test_numbering_and_history_go_on_after_a_restart(tmp_path: Path, history: int) -> None:
    path = tmp_path / "state" / "journal.sqlite"
    assert run_once(path, history, range(10)) == list(range(1, 11))
    journal = Journal(history=history, store=JournalStore(path, history=history))
    assert journal.last_seq == 10
    kept = min(history, 10)
    resume = journal.since(10 - kept)
    assert resume.complete
    assert [seq for seq, _, _ in resume.entries] == list(range(11 - kept, 11))
    assert [json.loads(payload)["fields"]["n"] for _, _, payload in resume.entries] == list(
        range(10 - kept, 10)
    )
    assert journal.append(envelope(10)).seq == 11  # on from where it stopped
    journal.close()


def test_clean_stops_number_on_contiguously(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    given = [seq for run in range(4) for seq in run_once(path, 5, range(run * 3, run * 3 + 3))]
    given += run_once(path, 5, range(0))  # a run that numbered nothing
    given += run_once(path, 5, range(12, 15))
    assert given == list(range(1, 16))
    store = JournalStore(path, history=5)
    assert (store.last_seq, store.uncertain) == (15, [])
    store.close()


RUN = """
import sys, time
from pathlib import Path

from gateway.runtime.envelope import Envelope
from gateway.runtime.journal import Gap, Journal
from gateway.runtime.journal_store import RESERVE, JournalStore
from protocol.events import Frame

frame = Frame(offset=0, cmd=16, message="environment", fields={}, payload=b"", raw=b"")
store = JournalStore(Path(sys.argv[1]), history=int(sys.argv[2]))
journal = Journal(history=store.history, store=store)
first = journal.append(Envelope("n", frame, received=0.0)).seq
for number in range(1, int(sys.argv[3])):
    journal.append(Envelope("n", frame, received=float(number)))
while store.committed_seq < journal.last_seq:  # the kill comes after a commit
    time.sleep(0.001)
print("first", first, flush=True)
for number in range(1, 10**9):
    last = journal.append(Envelope("n", frame, received=float(number))).seq
    if number % 100 == 0:
        print("given", last, flush=True)
"""


def killed_run(path: Path, *, history: int, committed: int, after: int) -> tuple[int, int]:
    """Number messages with a journal in a process of its own: ``committed`` of them,
    then wait for their commit, then more; SIGKILL it once it gave ``after`` numbers
    past its first; return the first and last seqs given (the last it said: it may have
    given up to 99 more)."""
    command = [sys.executable, "-c", RUN, str(path), str(history), str(committed)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        word, first = process.stdout.readline().split()
        assert word == "first", (word, first)
        last = int(first)
        while last < int(first) + after:
            word, given = process.stdout.readline().split()
            last = int(given)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=GUARD)
        process.stdout.close()
    return int(first), last


def test_a_killed_gateway_never_gives_a_number_twice(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first, last = killed_run(path, history=100, committed=1, after=5000)
    assert first == 1
    store = JournalStore(path, history=100)
    (skipped,) = store.uncertain
    committed = skipped.first - 1
    assert first <= committed  # the kill came after a commit: only the rest is skipped
    assert skipped.last == store.last_seq == committed + RESERVE > last + 99
    kept = list(range(max(1, committed - 99), committed + 1))
    assert [seq for seq, _, _ in store.entries] == kept
    journal = Journal(history=100, store=store)
    assert journal.append(envelope(0)).seq == store.last_seq + 1
    journal.close()
    # Killed again: the numbers go on past this run's reservation too.
    first, last = killed_run(path, history=100, committed=1, after=1000)
    assert first == skipped.last + 2
    store = JournalStore(path, history=100)
    assert store.uncertain[0] == skipped
    assert store.uncertain[1].first > first
    assert store.last_seq == store.uncertain[1].last > last + 99
    store.close()


def test_a_client_resuming_into_skipped_numbers_is_told(tmp_path: Path) -> None:
    """After an unclean stop, the numbers given but never committed are unknown: a
    client that saw some of them gets a gap, not a silent hole, across later clean runs."""
    path = tmp_path / "journal.sqlite"
    _, last = killed_run(path, history=100, committed=200, after=1000)
    journal = Journal(history=100, store=JournalStore(path, history=100))
    skipped = journal.since(0).gaps[-1]
    assert skipped.uncertain
    committed, reserved = skipped.first - 1, skipped.last
    assert journal.last_seq == reserved
    seen = last  # a dashboard that got messages up to here before the kill
    resume = journal.since(seen)
    assert resume.entries == []
    assert resume.gaps == (Gap(seen + 1, reserved, uncertain=True),)
    assert resume.first == reserved + 1  # live messages go on from there
    resume = journal.since(committed - 5)
    assert [seq for seq, _, _ in resume.entries] == list(range(committed - 4, committed + 1))
    assert resume.gaps == (Gap(committed + 1, reserved, uncertain=True),)
    assert journal.since(committed - 101).gaps == (
        Gap(committed - 100, committed - 100, uncertain=False),
        Gap(committed + 1, reserved, uncertain=True),
    )
    for number in range(3):
        journal.append(envelope(number))
    journal.close()
    # A clean run later: the skipped numbers are still told, the new ones are not.
    journal = Journal(history=100, store=JournalStore(path, history=100))
    assert journal.last_seq == reserved + 3
    resume = journal.since(seen)
    assert [seq for seq, _, _ in resume.entries] == [reserved + 1, reserved + 2, reserved + 3]
    assert resume.gaps == (Gap(seen + 1, reserved, uncertain=True),)
    assert journal.since(reserved + 1).complete
    # Once the history has moved past them, they are simply no longer in it.
    for number in range(100):
        journal.append(envelope(number))
    assert journal.since(seen).gaps == (
        Gap(seen + 1, reserved, uncertain=True),
        Gap(reserved + 1, reserved + 3, uncertain=False),
    )
    journal.close()
    store = JournalStore(path, history=100)
    assert store.uncertain == []
    journal = Journal(history=100, store=store)
    assert journal.since(seen).gaps == (Gap(seen + 1, reserved + 3, uncertain=False),)
    journal.close()


DISK_REFUSES = """
import logging, os, resource, signal, sys, threading
from pathlib import Path

from gateway.runtime.envelope import Envelope
from gateway.runtime.journal import Journal
from gateway.runtime.journal_store import JournalStore
from protocol.events import Frame

refused = threading.Event()
logs = []

class Collect(logging.Handler):
    def emit(self, record):
        logs.append(record.getMessage())
        if "cannot write" in record.getMessage():
            refused.set()

logging.getLogger("gateway").addHandler(Collect())
path = Path(sys.argv[1])
journal = Journal(history=10, store=JournalStore(path, history=10, reserve=50))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = max(os.path.getsize(name) for name in (path, f"{path}-wal"))
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))  # no file may grow: a full disk
frame = Frame(offset=0, cmd=16, message="environment", fields={}, payload=b"", raw=b"")
for number in range(200):
    journal.append(Envelope("n", frame, received=float(number)))
refused.wait(30)
for line in [*logs, f"last seq {journal.last_seq}"]:
    print(line, flush=True)
os._exit(0)
"""


def test_a_disk_that_refuses_never_stops_the_numbering(tmp_path: Path) -> None:
    """The reservation cannot be written: numbering goes on, and the logs say what is
    at stake (numbers given again if the gateway is killed before a write succeeds)."""
    path = tmp_path / "journal.sqlite"
    result = subprocess.run(
        [sys.executable, "-c", DISK_REFUSES, str(path)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    logs = result.stdout
    assert "seq 51 is beyond the reserved bound 50" in logs
    assert "if the gateway is killed now, numbers may be given again" in logs
    assert "cannot write (" in logs
    assert "last seq 200" in logs


def test_a_state_file_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first = JournalStore(path, history=3)
    try:
        with pytest.raises(
            ConfigError, match=r"state_dir: .* in use by another gateway: .* --state-dir DIR"
        ):
            JournalStore(path, history=3, source="gw.toml")
    finally:
        first.close()


def test_a_state_file_that_cannot_be_made_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.mkdir()  # no file can be made there; the same for a full disk
    with pytest.raises(ConfigError, match=r"state_dir: cannot use .*journal.sqlite \(unable to"):
        JournalStore(path, history=3, source="gw.toml")
    assert [item.name for item in tmp_path.iterdir()] == ["journal.sqlite"]


def test_a_gateway_with_a_state_dir_numbers_on(tmp_path: Path) -> None:
    config = GatewayConfig(state_dir=str(tmp_path), websocket=WebSocketConfig(enabled=False))
    first = Gateway(config, ())
    for number in range(5):
        first.frame(envelope(number))
    first.journal.close()
    second = Gateway(config, ())
    second.frame(envelope(5))
    assert second.journal.last_seq == 6
    second.journal.close()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["clean", "killed"])
def test_a_dashboard_resumes_across_a_gateway_restart(tmp_path: Path, stop: signal.Signals) -> None:
    """tgw run (state in its default directory), stopped and started again: a client that
    saw seq N resumes with since=N and gets N+1 onward, with no duplicate. After a clean
    stop, no gap either; after a SIGKILL, what was not committed is told as a gap, and
    the numbering goes on past every number the killed run may have given."""
    port = free_port()
    with simulator("--tcp", "127.0.0.1:0", *FAST) as (_, where):
        host, _, tcp_port = where.rpartition(":")
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[[sources]]\ntype = "tcp"\ndevice = "n"\nhost = "{host}"\nport = {tcp_port}\n'
            f"[websocket]\nport = {port}\n",
            encoding="utf-8",
        )

        def start() -> subprocess.Popen[str]:
            command = [str(TGW), "run", "-c", str(config)]
            return subprocess.Popen(command, stderr=subprocess.DEVNULL, text=True)

        async def messages(since: int | None, count: int) -> list[dict[str, object]]:
            async with connect(f"ws://127.0.0.1:{port}") as client:
                await client.recv()  # hello
                request: dict[str, object] = {"type": "subscribe", "filters": ["#"]}
                if since is not None:
                    request["since"] = since
                await client.send(json.dumps(request))
                got = await receive_until(
                    client,
                    lambda ms: sum(m["type"] == "message" for m in ms) >= count,
                    f"{count} messages",
                )
                return [m for m in got if m["type"] in ("message", "error")]

        process = start()
        wait_healthy(port)
        seen = asyncio.run(messages(None, 5))
        last = max(int(str(m["seq"])) for m in seen)
        process.send_signal(stop)
        process.wait(timeout=GUARD)
        process = start()
        try:
            wait_healthy(port)
            time.sleep(0.2)  # some messages of the new run, numbered on
            resumed = asyncio.run(messages(last, 20))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=GUARD)
    seqs = [int(str(m["seq"])) for m in resumed if m["type"] == "message"]
    if stop == signal.SIGTERM:
        assert all(m["type"] == "message" for m in resumed), resumed[:3]
        assert seqs == list(range(last + 1, last + 1 + len(seqs)))
        return
    error, *rest = resumed
    assert error["code"] == "history_gap", error
    found = re.fullmatch(
        r"messages (\d+) to (\d+) may have been numbered before the gateway stopped "
        r"uncleanly and are not in the history, replaying from seq (\d+)",
        str(error["message"]),
    )
    assert found, error
    missing, reserved = int(found[1]), int(found[2])
    assert reserved - RESERVE < missing  # the last commit's number, plus the reservation
    assert all(m["type"] == "message" for m in rest)
    kept = list(range(last + 1, missing))  # committed before the kill, in the history
    assert seqs[: len(kept)] == kept
    assert seqs[len(kept) :] == list(range(reserved + 1, reserved + 1 + len(seqs) - len(kept)))
