"""Where the simulator's bytes go: a PTY, a TCP server (like ser2net), or a file.

Every link has the same small interface (:class:`Link`): open it, write bytes to it,
make it vanish and come back (the disconnect fault), close it. Bytes the gateway sends
back arrive through the ``on_data`` callback given at construction.

``on_data`` is called from the event loop with each chunk as it arrives (chunks have no
relation to frame boundaries); it must not block and should not raise.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import logging
import os
import select
import sys
import termios
import tty
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from protocol.errors import GatewayError, os_error_reason

__all__ = ["DataCallback", "FileLink", "Link", "LinkDown", "LinkError", "PtyLink", "TcpLink"]

logger = logging.getLogger(__name__)

DataCallback = Callable[[bytes], None]

_READ_SIZE = 65536
_DRAIN_POLL = 0.01
"""Seconds between looks at the PTY queue while draining (the kernel offers no event)."""


class LinkDown(GatewayError):  # noqa: N818 - a state, not a failure of the caller
    """Raised by ``write`` while the link is disconnected."""


class LinkError(GatewayError):
    """A link cannot be created or used as asked: a path in the way, a port taken, misuse.

    ``str(error)`` is one line, ready to print to an operator.
    """


class Link(Protocol):
    """What the simulator writes frames to."""

    @property
    def description(self) -> str:
        """Where a gateway should connect: the PTY path (or its symlink), host:port, a file."""
        ...

    async def open(self) -> None:
        """Create the link (the PTY pair, the listening socket, the file)."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data`` whole; wait while the link cannot take more; raise LinkDown if down."""
        ...

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until the reader has taken what was written; say if it has."""
        ...

    async def disconnect(self) -> None:
        """Make the link vanish, as an unplugged cable would."""
        ...

    async def reconnect(self) -> None:
        """Bring the link back after ``disconnect``."""
        ...

    async def close(self) -> None:
        """Tear the link down for good; idempotent."""
        ...


class PtyLink:
    """A pseudo-terminal in raw mode: the gateway opens the slave as if it were a serial port.

    Call :meth:`open` first, then give the gateway :attr:`description`. With ``link_path``
    a symlink at that path always points to the current slave, so the gateway can use one
    stable name across :meth:`disconnect` / :meth:`reconnect` (which changes the slave's
    ``/dev/pts`` path, like a re-enumerated USB adapter). Call :meth:`close` when done: it
    closes the descriptors and removes the symlink.

    The link keeps the slave open itself, so writes never fail for want of a reader:
    bytes written before the gateway opens the slave wait in the PTY (up to its buffer,
    after which :meth:`write` waits).
    """

    def __init__(
        self, *, link_path: Path | None = None, on_data: DataCallback | None = None
    ) -> None:
        self._link_path = link_path
        self._on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._opened = False
        self._closed = False
        self._writable: asyncio.Future[None] | None = None
        self._write_lock = asyncio.Lock()

    @property
    def description(self) -> str:
        """The symlink path if one was asked for, else the slave's path ("" before open)."""
        if self._link_path is not None:
            return str(self._link_path)
        return self._slave_path or ""

    @property
    def slave_path(self) -> str | None:
        """The current slave's ``/dev/pts`` path, or None while the link is down."""
        return self._slave_path if self._master is not None else None

    async def open(self) -> None:
        """Create the PTY pair (and the symlink); raise LinkError if that is impossible."""
        if self._opened or self._closed:
            state = "closed" if self._closed else "already open"
            raise LinkError(f"pty link {self.description} is {state}")
        if self._link_path is not None:
            self._check_link_path(self._link_path)
        self._opened = True
        self._create()
        logger.info("pty created: %s", self._describe_created())

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` to the master, waiting while the PTY buffer is full.

        Raise LinkDown if the link is disconnected or closed, including while waiting
        (some of ``data`` may then have been written). Concurrent writes do not interleave.
        """
        self._check_opened()
        async with self._write_lock:
            view = memoryview(data)
            while True:
                master = self._master
                if master is None:
                    raise LinkDown(f"pty link {self.description} is down")
                if not view:
                    return
                try:
                    written = os.write(master, view)
                except BlockingIOError:
                    await self._wait_writable(master)
                    continue
                except OSError as exc:
                    reason = os_error_reason(exc)
                    raise LinkError(f"cannot write to pty {self._slave_path}: {reason}") from exc
                view = view[written:]

    async def drain(self, timeout: float) -> bool:
        """Wait until the gateway has read everything written, or ``timeout`` s have passed.

        Call it before :meth:`close` at the end of a run: a PTY that closes throws away
        what its reader has not read yet. Return True if nothing is left unread.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._slave is not None and _unread(self._slave) > 0:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_DRAIN_POLL)
        return True

    async def disconnect(self) -> None:
        """Close both ends and remove the symlink, as if the adapter were unplugged.

        A gateway holding the slave sees a hang-up (EOF or EIO); bytes it had not read
        yet are lost. :meth:`write` raises LinkDown until :meth:`reconnect`.
        """
        self._check_opened()
        if self._master is None:
            return
        old_path = self._slave_path
        self._teardown()
        logger.info("pty disconnected: %s", old_path)

    async def reconnect(self) -> None:
        """Create a new PTY pair with a new slave path and re-point the symlink.

        Called while the link is up, it unplugs it first. Raise LinkError once closed.
        """
        self._check_opened()
        if self._closed:
            raise LinkError(f"pty link {self.description} is closed")
        if self._master is not None:
            self._teardown()
        self._create()
        logger.info("pty reconnected: %s", self._describe_created())

    async def close(self) -> None:
        """Close both ends and remove the symlink; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._master is not None:
            self._teardown()
            logger.info("pty closed: %s", self.description)

    def _check_opened(self) -> None:
        if not self._opened:
            raise LinkError("pty link is not open: call open() first")

    @staticmethod
    def _check_link_path(link_path: Path) -> None:
        if os.path.lexists(link_path) and not link_path.is_symlink():
            raise LinkError(f"refusing to replace {link_path}: it exists and is not a symlink")

    def _describe_created(self) -> str:
        if self._link_path is None:
            return str(self._slave_path)
        return f"{self._slave_path} (symlink {self._link_path})"

    def _create(self) -> None:
        """Open a raw PTY pair whose slave path differs from the previous one; watch it."""
        previous = self._slave_path
        master, slave = os.openpty()
        try:
            slave_path = os.ttyname(slave)
            if slave_path == previous:
                # The kernel reuses the lowest free number: take another while holding this.
                spare = (master, slave)
                try:
                    master, slave = os.openpty()
                finally:
                    for fd in spare:
                        os.close(fd)
                slave_path = os.ttyname(slave)
            tty.setraw(slave)
            os.set_blocking(master, False)
            if self._link_path is not None:
                self._point_link(self._link_path, slave_path)
        except BaseException:
            os.close(master)
            os.close(slave)
            raise
        self._master, self._slave, self._slave_path = master, slave, slave_path
        asyncio.get_running_loop().add_reader(master, self._read_ready, master)

    @staticmethod
    def _point_link(link_path: Path, target: str) -> None:
        """Make ``link_path`` a symlink to ``target`` atomically."""
        PtyLink._check_link_path(link_path)
        temporary = link_path.with_name(f".{link_path.name}.{os.getpid()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(target)
            os.replace(temporary, link_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink()
            reason = os_error_reason(exc)
            raise LinkError(f"cannot create symlink {link_path} -> {target}: {reason}") from exc

    def _teardown(self) -> None:
        """Stop watching, close both ends, fail a pending write, remove the symlink."""
        master, slave = self._master, self._slave
        assert master is not None
        assert slave is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(master)
        loop.remove_writer(master)
        self._master = self._slave = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(LinkDown(f"pty link {self.description} went down"))
        os.close(master)
        os.close(slave)
        if self._link_path is not None and self._link_path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                self._link_path.unlink()

    async def _wait_writable(self, master: int) -> None:
        """Wait until ``master`` can take more bytes; raise LinkDown if the link goes down."""
        loop = asyncio.get_running_loop()
        writable: asyncio.Future[None] = loop.create_future()
        self._writable = writable
        loop.add_writer(master, _resolve, writable)
        try:
            await writable
        finally:
            self._writable = None
            if self._master == master:
                loop.remove_writer(master)

    def _read_ready(self, master: int) -> None:
        try:
            data = os.read(master, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            # Not expected while we hold the slave; stop watching rather than spin.
            logger.warning("pty %s read failed: %s", self._slave_path, os_error_reason(exc))
            asyncio.get_running_loop().remove_reader(master)
            return
        if data and self._on_data is not None:
            self._on_data(data)


def _unread(slave: int) -> int:
    """Bytes waiting in the slave's input queue: written by us, not yet read by the gateway."""
    # Bytes written to the master reach the slave's queue through a deferred flush, which
    # FIONREAD does not wait for; poll() on the slave runs that flush first.
    watch = select.poll()
    watch.register(slave, select.POLLIN)
    watch.poll(0)
    count = array.array("i", [0])
    fcntl.ioctl(slave, termios.FIONREAD, count)
    return count[0]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class TcpLink:
    """A TCP server that exposes the device the way ser2net exposes a serial port.

    Call :meth:`open`, then point the gateway at :attr:`description` (``host:port``; with
    port 0 the real port is known only after :meth:`open`). Every connected client gets
    every byte written; bytes from any client go to ``on_data``. With nobody connected,
    written bytes go nowhere. Give ``host`` as an address: a name resolving to several
    addresses with port 0 would listen on a different port per address.
    """

    def __init__(self, host: str, port: int, *, on_data: DataCallback | None = None) -> None:
        self._host = host
        self._port = port
        self._on_data = on_data
        self._server: asyncio.Server | None = None
        self._generation = 0  # which listening socket a connection came through
        self._clients: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = {}
        self._clients_changed = asyncio.Condition()
        self._opened = False
        self._closed = False
        self._write_lock = asyncio.Lock()

    @property
    def port(self) -> int:
        """The listening port: the real one once open, even if 0 was asked for."""
        return self._port

    @property
    def description(self) -> str:
        """``host:port`` (``[host]:port`` for an IPv6 address)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def client_count(self) -> int:
        """How many clients are connected now."""
        return len(self._clients)

    async def wait_clients(self, count: int = 1) -> None:
        """Wait until at least ``count`` clients are connected (across disconnects)."""
        async with self._clients_changed:
            await self._clients_changed.wait_for(lambda: len(self._clients) >= count)

    async def open(self) -> None:
        """Start listening; raise LinkError if the address cannot be bound."""
        if self._opened or self._closed:
            state = "closed" if self._closed else "already open"
            raise LinkError(f"tcp link {self.description} is {state}")
        self._opened = True
        await self._listen()
        logger.info("tcp link listening on %s", self.description)

    async def write(self, data: bytes) -> None:
        """Send ``data`` to every connected client and wait until each has taken it.

        A client whose connection fails is dropped; with no client the bytes are
        discarded. Raise LinkDown if the link is disconnected or closed, including
        while waiting.
        """
        self._check_opened()
        async with self._write_lock:
            if self._server is None:
                raise LinkDown(f"tcp link {self.description} is down")
            if not data:
                return
            for writer in list(self._clients):
                await self._send(writer, data)
            if self._server is None:
                raise LinkDown(f"tcp link {self.description} went down during a write")

    async def drain(self, timeout: float) -> bool:
        """Nothing to wait for: :meth:`write` returns once every client's socket took it."""
        return True

    async def disconnect(self) -> None:
        """Stop listening and close every client connection (they see EOF or a reset).

        New connections are refused and :meth:`write` raises LinkDown until
        :meth:`reconnect`.
        """
        self._check_opened()
        if self._server is None:
            return
        await self._teardown()
        logger.info("tcp link disconnected: %s", self.description)

    async def reconnect(self) -> None:
        """Listen again on the same port; unplug first if up. Raise LinkError once closed."""
        self._check_opened()
        if self._closed:
            raise LinkError(f"tcp link {self.description} is closed")
        if self._server is not None:
            await self._teardown()
        await self._listen()
        logger.info("tcp link reconnected: %s", self.description)

    async def close(self) -> None:
        """Stop listening and close every client; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            await self._teardown()
            logger.info("tcp link closed: %s", self.description)

    def _check_opened(self) -> None:
        if not self._opened:
            raise LinkError("tcp link is not open: call open() first")

    async def _listen(self) -> None:
        self._generation += 1
        generation = self._generation

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve_client(reader, writer, generation)

        try:
            server = await asyncio.start_server(serve, self._host, self._port, reuse_address=True)
        except OSError as exc:
            reason = os_error_reason(exc)
            raise LinkError(f"cannot listen on {self.description}: {reason}") from exc
        self._server = server
        self._port = server.sockets[0].getsockname()[1]

    async def _teardown(self) -> None:
        server = self._server
        assert server is not None
        self._server = None
        server.close()
        clients = list(self._clients.items())
        for writer, _ in clients:
            writer.transport.abort()  # an unplug: bytes not yet sent are lost, as on a wire
        handlers = [task for _, task in clients if task is not None]
        await asyncio.gather(*handlers, return_exceptions=True)
        self._clients.clear()
        await server.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            await self._drop(writer, "connection closing")
            return
        try:
            writer.write(data)
            await writer.drain()
        except OSError as exc:
            await self._drop(writer, os_error_reason(exc))

    async def _drop(self, writer: asyncio.StreamWriter, reason: str) -> None:
        if writer not in self._clients:
            return
        logger.info("tcp link %s dropped client %s: %s", self.description, _peer(writer), reason)
        await self._forget(writer)
        writer.transport.abort()

    async def _forget(self, writer: asyncio.StreamWriter) -> None:
        del self._clients[writer]
        async with self._clients_changed:
            self._clients_changed.notify_all()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, generation: int
    ) -> None:
        """Read one client until it leaves; run by asyncio's server for each connection."""
        if generation != self._generation or self._server is None:
            writer.transport.abort()  # accepted just before a disconnect
            return
        self._clients[writer] = asyncio.current_task()
        async with self._clients_changed:
            self._clients_changed.notify_all()
        logger.info("tcp link %s: client %s connected", self.description, _peer(writer))
        try:
            while data := await reader.read(_READ_SIZE):
                if self._on_data is not None:
                    self._on_data(data)
        except OSError as exc:
            logger.info("tcp link %s: client %s failed: %s", self.description, _peer(writer), exc)
        finally:
            if writer in self._clients:
                await self._forget(writer)
                writer.close()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


class FileLink:
    """Bytes to a binary file (truncated at :meth:`open`), or to stdout when ``target`` is None.

    Nothing comes back, so there is no ``on_data``. :meth:`disconnect` and
    :meth:`reconnect` only gate :meth:`write`, so a disconnect fault shows in the dump
    as missing bytes.
    """

    def __init__(self, target: Path | None) -> None:
        self._target = target
        self._file: BinaryIO | None = None
        self._down = False
        self._closed = False

    @property
    def description(self) -> str:
        """The file's path, or "stdout"."""
        return "stdout" if self._target is None else str(self._target)

    async def open(self) -> None:
        """Open (and truncate) the file; raise LinkError if it cannot be opened."""
        if self._file is not None or self._closed:
            state = "closed" if self._closed else "already open"
            raise LinkError(f"file link {self.description} is {state}")
        if self._target is None:
            self._file = sys.stdout.buffer
            return
        try:
            self._file = self._target.open("wb")
        except OSError as exc:
            reason = os_error_reason(exc)
            raise LinkError(f"cannot open {self._target} for writing: {reason}") from exc

    async def write(self, data: bytes) -> None:
        """Write and flush ``data``; raise LinkDown between disconnect and reconnect."""
        if self._down or self._closed:
            raise LinkDown(f"file link {self.description} is down")
        if self._file is None:
            raise LinkError(f"file link {self.description} is not open: call open() first")
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            reason = os_error_reason(exc)
            raise LinkError(f"cannot write to {self.description}: {reason}") from exc

    async def drain(self, timeout: float) -> bool:
        """Nothing to wait for: every write is flushed."""
        return True

    async def disconnect(self) -> None:
        """Make :meth:`write` raise LinkDown until :meth:`reconnect`."""
        self._down = True
        logger.info("file link disconnected: %s", self.description)

    async def reconnect(self) -> None:
        """Let :meth:`write` write again."""
        self._down = False
        logger.info("file link reconnected: %s", self.description)

    async def close(self) -> None:
        """Close the file (stdout is only flushed); calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        file, self._file = self._file, None
        if file is None:
            return
        if self._target is None:
            with contextlib.suppress(OSError, ValueError):
                file.flush()
        else:
            file.close()
