"""The websockets internals the fan-out uses: still there, still behaving (real sockets).

When a websockets release changes them, the first test fails naming what changed: fix
gateway/outputs/websocket/internals.py, or keep the websockets range of pyproject.toml
to the releases these tests pass on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.version import version as websockets_version

from gateway.outputs.websocket import internals
from gateway.outputs.websocket.internals import DirectWriter, TurnFlush, missing

GUARD = 10.0


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(GUARD):
            await main()

    asyncio.run(guarded())


@asynccontextmanager
async def connected(
    compression: str | None = None,
) -> AsyncIterator[tuple[ServerConnection, ClientConnection]]:
    """A real server connection and the client at its other end, which stops reading
    when it holds one message it was not asked for."""
    accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(connection: ServerConnection) -> None:
        await accepted.put(connection)
        await connection.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        async with connect(url, max_queue=1, compression=compression) as client:
            yield await accepted.get(), client


def test_the_internals_the_fan_out_uses_are_there() -> None:
    async def main() -> None:
        async with connected() as (connection, _):
            problems = missing(connection)
            assert not problems, (
                f"websockets {websockets_version} changed what "
                f"gateway/outputs/websocket/internals.py uses: {'; '.join(problems)}"
            )

    run(main)


@pytest.mark.parametrize("shared_turn", [False, True], ids=["own-callback", "turn-flush"])
def test_frames_written_now_and_sent_arrive_in_order(shared_turn: bool) -> None:
    async def main() -> None:
        async with connected() as (connection, client):
            turn = TurnFlush() if shared_turn else None
            writer = DirectWriter(connection, batch=3, turn=turn)
            taken = [writer.write_now(f"now {n}".encode()) for n in range(4)]
            assert taken == [True, True, True, False]  # a batch per loop turn, at most
            await writer.send([b"sent 1", b"sent 2"])
            received = [await client.recv() for _ in range(5)]
            assert received == ["now 0", "now 1", "now 2", "sent 1", "sent 2"]
            await asyncio.sleep(0)  # the turn ended: room for another batch
            assert writer.write_now(b"later")
            assert await client.recv() == "later"

    run(main)


def test_write_now_refuses_once_the_socket_is_backed_up() -> None:
    async def main() -> None:
        async with connected() as (connection, client):
            writer = DirectWriter(connection, batch=1)
            blob = b"x" * 65536
            written = 0
            while writer.write_now(blob):  # the client does not read
                written += 1
                assert written < 10_000, "write_now never saw the socket back up"
                await asyncio.sleep(0)
            assert connection.paused or connection.send_in_progress is not None
            for _ in range(written):
                assert len(await client.recv()) == len(blob)

    run(main)


def test_without_the_internals_the_writer_falls_back_to_send(
    caplog: pytest.LogCaptureFixture,
) -> None:
    internals._report.cache_clear()  # "said once" per process: start this test afresh

    async def main() -> None:
        async with connected() as (connection, client):
            del connection.paused  # as if a release had renamed it
            assert missing(connection) == ["ServerConnection.paused: no such attribute"]
            with caplog.at_level(logging.ERROR):
                writer = DirectWriter(connection, batch=8)
                DirectWriter(connection, batch=8)
            connection.paused = False  # connection.send needs it
            assert not writer.write_now(b"now")
            await writer.send([b"one", b"two"])
            assert [await client.recv() for _ in range(2)] == ["one", "two"]

    run(main)
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1  # said once
    assert "ServerConnection.paused: no such attribute" in errors[0]
    assert "falling back" in errors[0]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_a_shared_frame_is_the_frame_websockets_makes(size: int) -> None:
    payload = bytes(ord("a") + n % 26 for n in range(size))
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert internals.text_frame(payload) == expected
    assert internals.text_frame(payload) == expected  # again, from the one-frame cache


def test_with_compression_each_connection_frames_its_own() -> None:
    """A connection that negotiated permessage-deflate cannot take a shared frame: the
    writer goes through its protocol, and what arrives is what was sent, in order."""

    async def main() -> None:
        async with connected(compression="deflate") as (connection, client):
            assert connection.protocol.extensions  # negotiated
            writer = DirectWriter(connection, batch=8)
            assert writer.write_now(b'{"n": 1}' * 40)
            await writer.send([b'{"n": 2}' * 40])
            assert [await client.recv() for _ in range(2)] == [
                '{"n": 1}' * 40,
                '{"n": 2}' * 40,
            ]

    run(main)
