"""A TCP proxy that delays each direction by a fixed time: a long round trip on 127.0.0.1.

    python bench/delay_proxy.py --target 127.0.0.1:PORT --delay 0.025 [--port 0]

It listens on 127.0.0.1 (``--port``, 0: a free one), prints ``READY <port>`` on stdout,
and forwards every connection to ``--target``. Each chunk read from one side is written
to the other ``--delay`` seconds after it was read: chunks are stamped when read and
written in order when their time comes, so a stream of chunks is delayed, not slowed
(the round trip adds twice the delay; the bandwidth is not limited). An end of stream
is passed on after the chunks before it. It stops when its stdin closes (the benchmark
that started it has ended) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

HOST = "127.0.0.1"
CHUNK = 64 * 1024
MAX_CHUNKS = 4096
"""Chunks in flight per direction; the reader waits (no byte is dropped) beyond this."""

Stamped = tuple[float, bytes]
"""(event loop time when the chunk is due, the chunk); b"" is the end of the stream."""


async def delay_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read."""
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[Stamped] = asyncio.Queue(MAX_CHUNKS)

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                await line.put((loop.time() + delay, data))
        except OSError:
            pass
        await line.put((loop.time() + delay, b""))

    async def write() -> None:
        while True:
            due, data = await line.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(read(), name="read")
        tasks.create_task(write(), name="write")


async def relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
) -> None:
    """One connection: both directions delayed, until both ends closed (or one failed)."""
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(delay_line(client_reader, server_writer, delay), name="up")
            tasks.create_task(delay_line(server_reader, client_writer, delay), name="down")
    except* OSError:
        pass  # a side reset the connection: close both
    finally:
        for writer in (client_writer, server_writer):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def serve(port: int, target: tuple[str, int], delay: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def watch_stdin() -> None:
        await stdin.read()  # returns at end of file: the parent has gone
        stop.set()

    server = await asyncio.start_server(
        lambda r, w: relay(r, w, target, delay), HOST, port, reuse_address=True
    )
    async with server, asyncio.TaskGroup() as tasks:
        watcher = tasks.create_task(watch_stdin(), name="stdin")
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()
        watcher.cancel()
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delay_proxy.py", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay", type=float, required=True, help="seconds, each direction")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")
    arguments = parser.parse_args(argv)
    host, _, port = arguments.target.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--target must be host:port, got {arguments.target!r}")
    if arguments.delay < 0:
        parser.error(f"--delay must be at least 0, got {arguments.delay}")
    asyncio.run(serve(arguments.port, (host, int(port)), arguments.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
