"""The JSON-lines file output: lines in order, rotation, a full buffer, a refusing disk."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from pathlib import Path

import pytest

from gateway.config import FileConfig
from gateway.outputs.file import JsonLinesFile
from gateway.runtime.envelope import Envelope
from gateway.runtime.journal import Journal, Published
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.status import DeviceStatus
from protocol.errors import ConfigError
from protocol.events import Frame
from tests.fwsim.helpers import simulator
from tests.gateway.test_gateway import ENVELOPE_KEYS, FAST, GUARD, gateway


def published(journal: Journal, count: int, *, padding: int = 0) -> list[Published]:
    frame = Frame(
        offset=0,
        cmd=16,
        message="environment",
        fields={"temperature": 21.5, "note": "x" * padding},
        payload=b"",
        raw=b"",
    )
    return [journal.append(Envelope("node-1", frame, received=1.5)) for _ in range(count)]


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def write_all(output: JsonLinesFile, messages: list[Published], *, start: bool) -> None:
    if start:
        await output.start()
    for message in messages:
        output.deliver(message)
    if not start:
        await output.start()
    await output.close(asyncio.get_running_loop().time() + 10)


def test_every_envelope_is_one_line_in_seq_order_with_statuses(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "envelopes.jsonl"  # the folder is made
    output = JsonLinesFile(FileConfig(path=str(path)), GatewayMetrics())
    messages = published(Journal(history=0), 3)

    async def main() -> None:
        await output.start()
        output.device_status(DeviceStatus("node-1", True, "connected", 1.0))
        for message in messages:
            output.deliver(message)
        await output.close(asyncio.get_running_loop().time() + 10)

    asyncio.run(main())
    got = lines(path)
    assert got[0] == {
        "type": "status",
        "device": "node-1",
        "online": True,
        "reason": "connected",
        "time": 1.0,
    }
    assert [record["seq"] for record in got[1:]] == [1, 2, 3]
    assert path.read_bytes().split(b"\n")[1] == messages[0].payload  # the very bytes
    assert output.health()["lines"] == 4


def test_statuses_can_be_left_out(tmp_path: Path) -> None:
    path = tmp_path / "envelopes.jsonl"
    output = JsonLinesFile(FileConfig(path=str(path), statuses=False), GatewayMetrics())

    async def main() -> None:
        await output.start()
        output.device_status(DeviceStatus("node-1", True, "connected", 1.0))
        output.deliver(published(Journal(history=0), 1)[0])
        await output.close(asyncio.get_running_loop().time() + 10)

    asyncio.run(main())
    assert [record["type"] for record in lines(path)] == ["message"]


@pytest.mark.parametrize("max_files", [0, 2, 50])
def test_rotation_keeps_whole_lines_and_the_newest_files(tmp_path: Path, max_files: int) -> None:
    path = tmp_path / "envelopes.jsonl"
    config = FileConfig(path=str(path), max_file_size=4096, max_files=max_files)
    output = JsonLinesFile(config, GatewayMetrics())
    messages = published(Journal(history=0), 200, padding=150)
    asyncio.run(write_all(output, messages, start=True))

    files = [path.with_name(f"{path.name}.{index}") for index in range(max_files, 0, -1)]
    kept = [file for file in [*files, path] if file.exists()]
    assert not path.with_name(f"{path.name}.{max_files + 1}").exists()
    seqs = []
    for file in kept:
        assert file.stat().st_size <= 4096
        assert file.read_bytes().endswith(b"\n")
        seqs += [record["seq"] for record in lines(file)]
    # Oldest file first: the lines kept are the newest ones, in order, with no hole.
    assert seqs == list(range(201 - len(seqs), 201))
    if max_files == 50:
        assert seqs == list(range(1, 201))


def test_a_full_buffer_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "envelopes.jsonl"
    metrics = GatewayMetrics()
    output = JsonLinesFile(FileConfig(path=str(path), buffer_size=4096), metrics)
    messages = published(Journal(history=0), 100, padding=100)
    with caplog.at_level(logging.WARNING, logger="gateway.outputs.file"):
        asyncio.run(write_all(output, messages, start=False))  # nothing writes meanwhile
    written = lines(path)
    dropped = output.health()["dropped"]
    assert written
    assert dropped
    assert len(written) + dropped == 100
    assert [record["seq"] for record in written] == list(range(1, len(written) + 1))
    sample = metrics.registry.get_sample_value("tgw_file_dropped_total", {"reason": "buffer full"})
    assert sample == dropped
    assert len([r for r in caplog.records if "buffer is full" in r.getMessage()]) == 1


def test_a_disk_that_refuses_is_counted_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = GatewayMetrics()
    output = JsonLinesFile(FileConfig(path="/dev/full"), metrics)  # every write: ENOSPC
    with caplog.at_level(logging.WARNING, logger="gateway.outputs.file"):
        asyncio.run(write_all(output, published(Journal(history=0), 5), start=True))
    health = output.health()
    assert health["lines"] + health["dropped"] == 5
    assert health["dropped"] >= 1
    assert health["last_error"] == "no space left on device"
    failed = metrics.registry.get_sample_value("tgw_file_dropped_total", {"reason": "write failed"})
    assert failed == health["dropped"]
    assert any("cannot write /dev/full" in record.getMessage() for record in caplog.records)


def test_wait_for_room_returns_once_the_disk_caught_up(tmp_path: Path) -> None:
    path = tmp_path / "envelopes.jsonl"
    output = JsonLinesFile(FileConfig(path=str(path), buffer_size=8192), GatewayMetrics())
    messages = published(Journal(history=0), 40, padding=100)

    async def main() -> None:
        for message in messages[:30]:  # more than half the buffer, before the thread runs
            output.deliver(message)
        assert output.health()["buffered_bytes"] > 4096
        await output.start()
        await asyncio.wait_for(output.wait_for_room(), 30)
        assert output.health()["buffered_bytes"] <= 8192 // 4
        for message in messages[30:]:
            output.deliver(message)
        await output.close(asyncio.get_running_loop().time() + 10)

    asyncio.run(main())
    assert len(lines(path)) + output.health()["dropped"] == 40


def test_tgw_run_writes_the_envelopes_of_a_device(tmp_path: Path) -> None:
    """End to end: fwsim on TCP, `tgw run` with only the file output, SIGTERM."""
    path = tmp_path / "out" / "envelopes.jsonl"
    with simulator("--tcp", "127.0.0.1:0", *FAST) as (_, where):
        host, _, port = where.rpartition(":")
        config = tmp_path / "gateway.toml"
        config.write_text(
            f"""
[[sources]]
type = "tcp"
device = "tcp-node"
host = "{host}"
port = {port}

[websocket]
enabled = false

[http]
enabled = false

[file]
path = "out/envelopes.jsonl"
""",
            encoding="utf-8",
        )
        with gateway(config):
            deadline = time.monotonic() + GUARD
            while not (path.exists() and path.read_bytes().count(b'"type":"message"') >= 10):
                assert time.monotonic() < deadline, "no envelopes in the file"
                time.sleep(0.05)
    records = lines(path)  # relative to the config file's folder, written whole at the end
    messages = [record for record in records if record["type"] == "message"]
    assert [record["seq"] for record in messages] == list(range(1, len(messages) + 1))
    assert {record["device"] for record in messages} == {"tcp-node"}
    assert set(messages[0]) >= ENVELOPE_KEYS
    statuses = [(r["online"], r["reason"]) for r in records if r["type"] == "status"]
    assert statuses[0] == (True, "connected")
    assert statuses[-1][0] is False


def test_a_disk_that_refuses_mid_line_leaves_whole_lines(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE: EFBIG) cuts a write short: the part of a line it
    wrote is undone, and only lines on disk count as written."""
    path = tmp_path / "envelopes.jsonl"
    output = JsonLinesFile(FileConfig(path=str(path)), GatewayMetrics())
    messages = published(Journal(history=0), 100, padding=100)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)

    async def main() -> None:
        await output.start()
        for index, message in enumerate(messages):
            output.deliver(message)
            if index % 10 == 9:
                await asyncio.sleep(0.01)  # several batches, one of them cut short
        await output.close(asyncio.get_running_loop().time() + 10)

    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, limits[1]))
    try:
        asyncio.run(main())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    data = path.read_bytes()
    assert len(data) <= 10_000
    assert data.endswith(b"\n")
    written = lines(path)
    health = output.health()
    assert health["lines"] == len(written)
    assert health["lines"] + health["dropped"] == 100
    assert health["last_error"] == "file too large"
    assert [record["seq"] for record in written] == list(range(1, len(written) + 1))


def test_a_file_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    output = JsonLinesFile(
        FileConfig(path=str(blocker / "envelopes.jsonl")), GatewayMetrics(), source="gw.toml"
    )
    with pytest.raises(ConfigError) as caught:
        asyncio.run(output.start())
    assert str(caught.value).startswith(
        f"gw.toml: file.path: cannot open {blocker / 'envelopes.jsonl'}: "
    )
