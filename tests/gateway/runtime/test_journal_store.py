"""The journal on disk: numbering and history go on across restarts, within the
history's size; a dashboard resuming after a restart gets what it missed."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from gateway.config import GatewayConfig, WebSocketConfig
from gateway.runtime.envelope import Envelope
from gateway.runtime.gateway import Gateway
from gateway.runtime.journal import Journal
from gateway.runtime.journal_store import JournalStore
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
    entries, complete = journal.since(10 - kept)
    assert complete
    assert [seq for seq, _, _ in entries] == list(range(11 - kept, 11))
    assert [json.loads(payload)["fields"]["n"] for _, _, payload in entries] == list(
        range(10 - kept, 10)
    )
    assert journal.append(envelope(10)).seq == 11  # on from where it stopped
    journal.close()


def test_a_state_file_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first = JournalStore(path, history=3)
    try:
        with pytest.raises(ConfigError, match=r"state_dir: .* in use by another gateway"):
            JournalStore(path, history=3, source="gw.toml")
    finally:
        first.close()


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


def test_a_dashboard_resumes_across_a_gateway_restart(tmp_path: Path) -> None:
    """tgw run with --state-dir, stopped and started again: a client that saw seq N
    resumes with since=N and gets N+1 onward, with no history_gap and no duplicate."""
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
            command = [str(TGW), "run", "-c", str(config), "--state-dir", str(tmp_path / "s")]
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
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=GUARD) == 0
        process = start()
        try:
            wait_healthy(port)
            time.sleep(0.2)  # some messages of the new run, numbered on
            resumed = asyncio.run(messages(last, 20))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=GUARD)
    assert all(m["type"] == "message" for m in resumed), resumed[:3]
    seqs = [int(str(m["seq"])) for m in resumed]
    assert seqs == list(range(last + 1, last + 1 + len(seqs)))
