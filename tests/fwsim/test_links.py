"""The simulator's links on real parts: real PTYs, real sockets on 127.0.0.1, real files.

Every test runs its own event loop with ``asyncio.run``; the timeout only guards
against a hang, no test depends on how long anything takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fwsim.links import FileLink, Link, LinkDown, LinkError, PtyLink, TcpLink
from protocol.errors import GatewayError

T = TypeVar("T")

GUARD_SECONDS = 10.0
EVERY_BYTE = bytes(range(256))  # includes CR, LF, ^C, ^D, XON, XOFF
LOCALHOST = "127.0.0.1"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a fresh event loop, failing instead of hanging."""

    async def guarded() -> T:
        async with asyncio.timeout(GUARD_SECONDS):
            return await coro

    return asyncio.run(guarded())


class Received:
    """An ``on_data`` callback that keeps every byte and lets a test wait for them."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._arrived = asyncio.Event()

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk
        self._arrived.set()

    async def wait_for_size(self, size: int) -> bytes:
        while len(self.data) < size:
            self._arrived.clear()
            await self._arrived.wait()
        return bytes(self.data)


def open_slave(path: str | Path) -> int:
    """Open a PTY slave the way a gateway would: no controlling tty, non-blocking here."""
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


async def read_exactly(fd: int, size: int, *, chunk: int = 65536) -> bytes:
    """Read ``size`` bytes from ``fd`` at most ``chunk`` at a time; fail on EOF."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    received = bytearray()
    try:
        while len(received) < size:
            await ready.wait()
            ready.clear()
            try:
                data = os.read(fd, min(chunk, size - len(received)))
            except BlockingIOError:
                continue
            if not data:
                raise EOFError(f"eof after {len(received)} of {size} bytes")
            received += data
    finally:
        loop.remove_reader(fd)
    return bytes(received)


async def read_until_hangup(fd: int) -> bytes:
    """Read ``fd`` until it reports EOF or EIO (a hung-up terminal); return what came."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    received = bytearray()
    try:
        while True:
            await ready.wait()
            ready.clear()
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                return bytes(received)
            if not data:
                return bytes(received)
            received += data
    finally:
        loop.remove_reader(fd)


def test_every_link_satisfies_the_link_protocol(tmp_path: Path) -> None:
    links: list[Link] = [PtyLink(), TcpLink(LOCALHOST, 0), FileLink(tmp_path / "dump.bin")]
    assert [type(link).__name__ for link in links] == ["PtyLink", "TcpLink", "FileLink"]


def test_link_error_is_a_gateway_error() -> None:
    assert issubclass(LinkError, GatewayError)


# -- PTY ------------------------------------------------------------------------------


def test_pty_passes_every_byte_value_to_a_reader_unchanged(tmp_path: Path) -> None:
    link_path = tmp_path / "ttyFWSIM"

    async def scenario() -> None:
        link = PtyLink(link_path=link_path)
        await link.open()
        fd = open_slave(link.description)
        try:
            assert link.description == str(link_path)
            assert os.readlink(link_path) == link.slave_path
            await link.write(EVERY_BYTE * 4)
            assert await read_exactly(fd, len(EVERY_BYTE) * 4) == EVERY_BYTE * 4
        finally:
            os.close(fd)
            await link.close()

    run(scenario())


def test_pty_passes_bytes_from_the_reader_to_on_data_unchanged() -> None:
    async def scenario() -> None:
        received = Received()
        link = PtyLink(on_data=received)
        await link.open()
        assert link.slave_path is not None
        assert link.description == link.slave_path
        assert link.slave_path.startswith("/dev/pts/")
        fd = open_slave(link.description)
        try:
            os.write(fd, EVERY_BYTE * 4)
            assert await received.wait_for_size(len(EVERY_BYTE) * 4) == EVERY_BYTE * 4
        finally:
            os.close(fd)
            await link.close()

    run(scenario())


def test_pty_keeps_bytes_written_before_a_reader_opens() -> None:
    async def scenario() -> None:
        link = PtyLink()
        await link.open()
        try:
            await link.write(b"\x7e\x01early\r\n")
            fd = open_slave(link.description)
            try:
                assert await read_exactly(fd, 9) == b"\x7e\x01early\r\n"
            finally:
                os.close(fd)
        finally:
            await link.close()

    run(scenario())


def test_pty_large_write_waits_for_a_slow_reader_and_arrives_intact() -> None:
    data = random.Random(1).randbytes(1 << 20)  # far more than a PTY buffers

    async def scenario() -> None:
        link = PtyLink()
        await link.open()
        fd = open_slave(link.description)
        try:
            async with asyncio.TaskGroup() as tasks:
                writing = tasks.create_task(link.write(data))
                for _ in range(20):
                    await asyncio.sleep(0)
                assert not writing.done(), "1 MiB cannot fit in the pty: the write must wait"
                received = await read_exactly(fd, len(data), chunk=1024)
            assert received == data
        finally:
            os.close(fd)
            await link.close()

    run(scenario())


def test_pty_write_waiting_on_a_full_buffer_raises_link_down_on_disconnect() -> None:
    async def scenario() -> None:
        link = PtyLink()
        await link.open()
        try:
            writing = asyncio.ensure_future(link.write(bytes(1 << 20)))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not writing.done()
            await link.disconnect()
            with pytest.raises(LinkDown):
                await writing
        finally:
            await link.close()

    run(scenario())


def test_pty_disconnect_hangs_up_the_reader_and_removes_the_symlink(tmp_path: Path) -> None:
    link_path = tmp_path / "ttyFWSIM"

    async def scenario() -> None:
        link = PtyLink(link_path=link_path)
        await link.open()
        fd = open_slave(link_path)
        try:
            await link.write(b"before")
            assert await read_exactly(fd, 6) == b"before"
            await link.disconnect()
            assert await read_until_hangup(fd) == b""
            assert not os.path.lexists(link_path)
            assert link.slave_path is None
            with pytest.raises(LinkDown):
                await link.write(b"after")
            await link.disconnect()  # already down: nothing to do
        finally:
            os.close(fd)
            await link.close()

    run(scenario())


@pytest.mark.parametrize("reader_keeps_old_slave", [True, False])
def test_pty_reconnect_points_the_symlink_to_a_new_working_slave(
    tmp_path: Path, reader_keeps_old_slave: bool
) -> None:
    link_path = tmp_path / "ttyFWSIM"

    async def scenario() -> None:
        received = Received()
        link = PtyLink(link_path=link_path, on_data=received)
        await link.open()
        old_path = link.slave_path
        old_fd = open_slave(link_path)
        try:
            await link.disconnect()
            if not reader_keeps_old_slave:
                os.close(old_fd)  # frees the pts number the kernel would hand out again
            await link.reconnect()
            assert link.slave_path is not None
            assert link.slave_path != old_path
            assert os.readlink(link_path) == link.slave_path
            fd = open_slave(link_path)
            try:
                await link.write(EVERY_BYTE)
                assert await read_exactly(fd, len(EVERY_BYTE)) == EVERY_BYTE
                os.write(fd, b"\x03\x04pong\r")
                assert await received.wait_for_size(7) == b"\x03\x04pong\r"
            finally:
                os.close(fd)
        finally:
            if reader_keeps_old_slave:
                os.close(old_fd)
            await link.close()

    run(scenario())


def test_pty_close_removes_the_symlink_and_is_idempotent(tmp_path: Path) -> None:
    link_path = tmp_path / "ttyFWSIM"

    async def scenario() -> None:
        link = PtyLink(link_path=link_path)
        await link.open()
        assert link_path.is_symlink()
        await link.close()
        assert not os.path.lexists(link_path)
        await link.close()
        with pytest.raises(LinkDown):
            await link.write(b"x")
        with pytest.raises(LinkError):
            await link.reconnect()

    run(scenario())


def test_pty_replaces_a_stale_symlink(tmp_path: Path) -> None:
    link_path = tmp_path / "ttyFWSIM"
    link_path.symlink_to("/dev/pts/does-not-exist")

    async def scenario() -> None:
        link = PtyLink(link_path=link_path)
        await link.open()
        try:
            assert os.readlink(link_path) == link.slave_path
            assert sorted(path.name for path in tmp_path.iterdir()) == ["ttyFWSIM"]
        finally:
            await link.close()

    run(scenario())


def test_pty_refuses_a_link_path_that_is_a_regular_file(tmp_path: Path) -> None:
    link_path = tmp_path / "ttyFWSIM"
    link_path.write_bytes(b"keep me")

    async def scenario() -> None:
        link = PtyLink(link_path=link_path)
        with pytest.raises(LinkError) as caught:
            await link.open()
        assert str(caught.value) == (
            f"refusing to replace {link_path}: it exists and is not a symlink"
        )
        assert link_path.read_bytes() == b"keep me"

    run(scenario())


def test_pty_write_before_open_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="not open"):
        run(PtyLink().write(b"x"))


# -- TCP ------------------------------------------------------------------------------


def test_tcp_broadcasts_to_every_client() -> None:
    async def scenario() -> None:
        link = TcpLink(LOCALHOST, 0)
        await link.open()
        try:
            assert link.port != 0
            assert link.description == f"{LOCALHOST}:{link.port}"
            first_reader, first_writer = await asyncio.open_connection(LOCALHOST, link.port)
            second_reader, second_writer = await asyncio.open_connection(LOCALHOST, link.port)
            await link.wait_clients(2)
            await link.write(EVERY_BYTE)
            assert await first_reader.readexactly(256) == EVERY_BYTE
            assert await second_reader.readexactly(256) == EVERY_BYTE
            first_writer.close()
            second_writer.close()
        finally:
            await link.close()

    run(scenario())


def test_tcp_passes_client_bytes_to_on_data() -> None:
    async def scenario() -> None:
        received = Received()
        link = TcpLink(LOCALHOST, 0, on_data=received)
        await link.open()
        try:
            _, first = await asyncio.open_connection(LOCALHOST, link.port)
            _, second = await asyncio.open_connection(LOCALHOST, link.port)
            first.write(EVERY_BYTE)
            assert await received.wait_for_size(256) == EVERY_BYTE
            second.write(b"pong")
            assert await received.wait_for_size(260) == EVERY_BYTE + b"pong"
            first.close()
            second.close()
        finally:
            await link.close()

    run(scenario())


def test_tcp_write_with_no_client_discards_the_bytes() -> None:
    async def scenario() -> None:
        link = TcpLink(LOCALHOST, 0)
        await link.open()
        try:
            assert link.client_count == 0
            await link.write(b"nobody hears this")
            reader, writer = await asyncio.open_connection(LOCALHOST, link.port)
            await link.wait_clients(1)
            await link.write(b"!")
            assert await reader.readexactly(1) == b"!"  # not the first byte of the old write
            writer.close()
        finally:
            await link.close()

    run(scenario())


def test_tcp_client_that_went_away_does_not_fail_writes() -> None:
    async def scenario() -> None:
        link = TcpLink(LOCALHOST, 0)
        await link.open()
        try:
            _, leaving = await asyncio.open_connection(LOCALHOST, link.port)
            staying_reader, staying = await asyncio.open_connection(LOCALHOST, link.port)
            await link.wait_clients(2)
            leaving.transport.abort()
            for _ in range(3):
                await link.write(b"abc")
            assert await staying_reader.readexactly(9) == b"abc" * 3
            staying.close()
        finally:
            await link.close()

    run(scenario())


def test_tcp_disconnect_closes_clients_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        link = TcpLink(LOCALHOST, 0)
        await link.open()
        try:
            reader, writer = await asyncio.open_connection(LOCALHOST, link.port)
            await link.wait_clients(1)
            await link.disconnect()
            assert link.client_count == 0
            with contextlib.suppress(ConnectionResetError):  # as good as an eof
                assert await reader.read() == b""
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(LOCALHOST, link.port)
            with pytest.raises(LinkDown):
                await link.write(b"x")
            writer.close()
        finally:
            await link.close()

    run(scenario())


def test_tcp_reconnect_listens_again_on_the_same_port() -> None:
    async def scenario() -> None:
        received = Received()
        link = TcpLink(LOCALHOST, 0, on_data=received)
        await link.open()
        try:
            port = link.port
            _, old = await asyncio.open_connection(LOCALHOST, port)
            await link.wait_clients(1)
            await link.disconnect()
            await link.reconnect()
            assert link.port == port
            reader, writer = await asyncio.open_connection(LOCALHOST, port)
            await link.wait_clients(1)
            await link.write(b"back")
            assert await reader.readexactly(4) == b"back"
            writer.write(b"ping")
            assert await received.wait_for_size(4) == b"ping"
            old.close()
            writer.close()
        finally:
            await link.close()

    run(scenario())


def test_tcp_close_is_idempotent() -> None:
    async def scenario() -> None:
        link = TcpLink(LOCALHOST, 0)
        await link.open()
        port = link.port
        await link.close()
        await link.close()
        with pytest.raises(LinkDown):
            await link.write(b"x")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(LOCALHOST, port)

    run(scenario())


def test_tcp_port_in_use_is_a_one_line_link_error() -> None:
    async def scenario() -> None:
        first = TcpLink(LOCALHOST, 0)
        await first.open()
        try:
            second = TcpLink(LOCALHOST, first.port)
            with pytest.raises(LinkError) as caught:
                await second.open()
            assert f"{LOCALHOST}:{first.port}" in str(caught.value)
            assert "\n" not in str(caught.value)
        finally:
            await first.close()

    run(scenario())


# -- file -----------------------------------------------------------------------------


def test_file_link_writes_bytes_to_the_file(tmp_path: Path) -> None:
    target = tmp_path / "dump.bin"

    async def scenario() -> None:
        link = FileLink(target)
        await link.open()
        assert link.description == str(target)
        await link.write(EVERY_BYTE)
        assert target.read_bytes() == EVERY_BYTE  # flushed at once
        await link.write(b"\r\n")
        await link.close()
        await link.close()

    run(scenario())
    assert target.read_bytes() == EVERY_BYTE + b"\r\n"


def test_file_link_is_down_between_disconnect_and_reconnect(tmp_path: Path) -> None:
    target = tmp_path / "dump.bin"

    async def scenario() -> None:
        link = FileLink(target)
        await link.open()
        await link.write(b"before ")
        await link.disconnect()
        with pytest.raises(LinkDown):
            await link.write(b"lost ")
        await link.reconnect()
        await link.write(b"after")
        await link.close()
        with pytest.raises(LinkDown):
            await link.write(b"closed")

    run(scenario())
    assert target.read_bytes() == b"before after"


def test_file_link_writes_to_stdout_without_a_target(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    async def scenario() -> None:
        link = FileLink(None)
        await link.open()
        assert link.description == "stdout"
        await link.write(EVERY_BYTE)
        await link.close()

    run(scenario())
    assert capsysbinary.readouterr().out == EVERY_BYTE


def test_file_link_unwritable_target_is_a_one_line_link_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dump.bin"
    with pytest.raises(LinkError) as caught:
        run(FileLink(target).open())
    assert str(caught.value) == f"cannot open {target} for writing: no such file or directory"
