"""Live sources: the links to devices (a serial port, a serial port behind a TCP server).

A :class:`LinkSource` owns one link and feeds what it reads to a
:class:`~gateway.runtime.session.DeviceSession`, handing the envelopes and status
changes it returns to the sink, and every chunk to the capture, if any. The gateway runs
one per device::

    source = make_source(config, schema, metrics, sink, capture=capture)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(source.run(), name=f"source {source.device}")

:meth:`LinkSource.run` never returns on its own: when the port cannot be opened,
vanishes or the connection drops, it flushes what the decoder held, and tries again
after the delays of :class:`~gateway.runtime.reconnect.Reconnect` (which logs the outage
once), so the gateway starts without the device and picks it up when it appears.
Reading blocks in the event loop (no polling), so idle ports cost nothing. Cancel the
task to stop it: the port is closed on the way out and the device reported offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from typing import Any, Protocol

import serial
import serial_asyncio_fast

from gateway.config import SerialSourceConfig, TcpSourceConfig
from gateway.runtime.capture import CaptureWriter
from gateway.runtime.envelope import Envelope
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.reconnect import Reconnect, Wording
from gateway.runtime.session import STOPPED, DeviceSession, LinkState, SessionEvent
from gateway.runtime.status import DeviceStatus
from protocol.errors import GatewayError, os_error_reason
from protocol.events import DecoderStatistics
from protocol.schema import Schema

__all__ = [
    "DeviceUnavailable",
    "Link",
    "LinkSource",
    "SerialLink",
    "Source",
    "SourceSink",
    "TcpLink",
    "make_source",
]

logger = logging.getLogger(__name__)

READ_SIZE = 65536
"""Most bytes taken from the link per read."""
READ_LIMIT = 65536
"""Bytes the stream reader buffers before it stops reading the link (twice this, in fact)."""
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a TCP connection before counting the attempt as failed."""
PRESENCE_POLL = 0.05
"""Seconds between looks for a serial port's path while it is absent."""
CLOSE_TIMEOUT = 5.0
"""Seconds to wait for a closing link to say it is closed."""

PARITY = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}
STOP_BITS = {
    1: serial.STOPBITS_ONE,
    1.5: serial.STOPBITS_ONE_POINT_FIVE,
    2: serial.STOPBITS_TWO,
}

OUTAGE = Wording.same("%(link)s: %(problem)s; retrying in %(delay).3g s")


class SourceSink(Protocol):
    """Where a source delivers. Both methods are called from the event loop: never block."""

    def frame(self, envelope: Envelope) -> None:
        """Take one decoded frame."""

    def status(self, status: DeviceStatus) -> None:
        """Take a change of the device's state: online, or offline and why."""


class Source(Protocol):
    """One device as the gateway runs it: a live link or a replay."""

    @property
    def device(self) -> str:
        """The device's name, as configured."""

    @property
    def kind(self) -> str:
        """``serial``, ``tcp`` or ``replay``, as in the configuration."""

    @property
    def where(self) -> str:
        """Where the device is: a port's path, ``host:port``, the dumps."""

    @property
    def schema(self) -> Schema:
        """What the device speaks: build its command frames with
        :class:`protocol.encoder.FrameEncoder`."""

    @property
    def capture(self) -> CaptureWriter | None:
        """Where its bytes are recorded, if they are."""

    async def run(self) -> None:
        """Read the device until cancelled (a replay: until its end)."""

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the device; raise :class:`DeviceUnavailable` if it cannot."""

    def state(self) -> dict[str, Any]:
        """The source as ``/healthz`` shows it."""

    def statistics(self) -> DecoderStatistics:
        """The decoder's counts so far."""


class DeviceUnavailable(GatewayError):  # noqa: N818 - a state, like fwsim's LinkDown
    """Raised by :meth:`Source.write` when the device's link is not open."""


def emit(sink: SourceSink, events: list[SessionEvent]) -> None:
    """Hand a session's events to ``sink``, in order."""
    for event in events:
        if isinstance(event, Envelope):
            sink.frame(event)
        else:
            sink.status(event)


class Link(Protocol):
    """How to open one kind of link, and how to say what went wrong with it."""

    kind: str
    where: str

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the link; raise OSError (or ValueError for impossible settings) if it fails."""

    def open_failed(self, exc: OSError | ValueError) -> str:
        """Why the link could not be opened, in an operator's words."""

    def lost(self, exc: OSError | None) -> str:
        """Why an open link ended (None: end of input), in an operator's words."""

    def shut(self, writer: asyncio.StreamWriter) -> None:
        """Start closing the link (it may have closed itself already)."""

    def absent(self) -> bool:
        """True while the link cannot be there at all (a serial port's path is gone): its
        return is then watched for, rather than waited for through the backoff."""


class _KeepingInput(serial.Serial):  # type: ignore[misc]  # pyserial has no types
    """A serial port whose ``open()`` keeps the bytes waiting in the driver.

    pyserial's ``open()`` ends by discarding them (``_reset_input_buffer``): what a device
    sent between its return and the gateway's reopening (about 24 frames per replug at
    1,000 frames/s, measured by scripts/faults.py) would be lost. A reset asked for
    later (``reset_input_buffer()``) still works.
    """

    _opening = False

    def open(self) -> None:
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False

    def _reset_input_buffer(self) -> None:
        if not self._opening:
            super()._reset_input_buffer()


class SerialLink:
    """A serial port (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, a PTY)."""

    kind = "serial"

    def __init__(self, config: SerialSourceConfig) -> None:
        self._config = config
        self.where = config.where

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        port = await loop.run_in_executor(None, self._open_port)
        reader = asyncio.StreamReader(limit=READ_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await serial_asyncio_fast.connection_for_serial(
                loop, lambda: protocol, port
            )
        except BaseException:
            port.close()
            raise
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def _open_port(self) -> serial.Serial:
        """Open the port, keeping what the device sent since it appeared (in a thread:
        opening may block)."""
        config = self._config
        port = _KeepingInput(
            baudrate=config.baud,
            parity=PARITY[config.parity],
            stopbits=STOP_BITS[config.stop_bits],
            rtscts=config.flow_control == "rtscts",
            xonxoff=config.flow_control == "xonxoff",
        )
        port.port = config.path
        port.open()
        return port

    def open_failed(self, exc: OSError | ValueError) -> str:
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return f"{self.where} is absent (no such file or directory)"
        return f"cannot open {self.where} ({os_error_reason(exc)})"

    def lost(self, exc: OSError | None) -> str:
        reason = "end of input" if exc is None else os_error_reason(exc)
        return f"{self.where} disappeared ({reason})"

    def shut(self, writer: asyncio.StreamWriter) -> None:
        # Abort rather than close: a graceful close waits in a thread for the output to
        # drain (tcdrain), forever if hardware flow control holds it. write() has
        # already waited for what it sent to leave the transport.
        writer.transport.abort()

    def absent(self) -> bool:
        """True while the port's path does not exist (a USB adapter unplugged)."""
        return not os.path.exists(self._config.path)  # a dangling symlink is absent too


class TcpLink:
    """A TCP server that relays a serial port (ser2net and the like)."""

    kind = "tcp"

    def __init__(self, config: TcpSourceConfig) -> None:
        self._config = config
        self.where = config.where

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await asyncio.open_connection(
                self._config.host, self._config.port, limit=READ_LIMIT
            )

    def open_failed(self, exc: OSError | ValueError) -> str:
        return f"cannot connect to {self.where} ({os_error_reason(exc)})"

    def lost(self, exc: OSError | None) -> str:
        if exc is None:
            return f"{self.where} closed the connection"
        return f"connection to {self.where} lost ({os_error_reason(exc)})"

    def shut(self, writer: asyncio.StreamWriter) -> None:
        writer.close()

    def absent(self) -> bool:
        """Never: a server's return cannot be watched for, only tried."""
        return False


class LinkSource:
    """One device's live link: read, decode, deliver, reconnect.

    Call :meth:`run` in a task and cancel it to stop; :meth:`write` sends bytes down to
    the device meanwhile; :meth:`state` says how it is doing. Every chunk read goes to
    ``capture`` too, if there is one (its life cycle is the caller's).
    """

    def __init__(
        self,
        config: SerialSourceConfig | TcpSourceConfig,
        link: Link,
        schema: Schema,
        metrics: GatewayMetrics,
        sink: SourceSink,
        *,
        capture: CaptureWriter | None = None,
    ) -> None:
        self.config = config
        self.schema = schema
        self.capture = capture
        self._link = link
        self._sink = sink
        self._session = DeviceSession(
            config.device,
            schema,
            metrics,
            silence_timeout=config.silence_timeout,
            include_raw=config.include_raw,
            logger=logger,
        )
        self._reconnect = Reconnect(
            config.device,
            initial=config.reconnect_initial,
            maximum=config.reconnect_max,
            logger=logger,
            wording=OUTAGE,
            counter=metrics.reconnects.labels(config.device),
        )
        self._writer: asyncio.StreamWriter | None = None
        self._running = False

    @property
    def device(self) -> str:
        """The device's name, as configured."""
        return self.config.device

    @property
    def kind(self) -> str:
        """``serial`` or ``tcp``."""
        return self._link.kind

    @property
    def where(self) -> str:
        """The serial port's path, or ``host:port`` (``[host]:port`` for IPv6)."""
        return self._link.where

    @property
    def connected(self) -> bool:
        """True while the link is open (the device may still be silent)."""
        return self._writer is not None

    async def run(self) -> None:
        """Read the device until cancelled, reopening the link whenever it fails.

        Never returns; cancel the task to stop it, which closes the link and reports
        the device offline. Exceptions other than link failures (a bug in the sink, say)
        propagate.

        The backoff starts afresh once a link has delivered a frame, not merely opened:
        a server that accepts and hangs up at once (ser2net with its port taken) is
        retried ever more slowly, and logged once, like a port that will not open.
        """
        if self._running:
            raise GatewayError(f"source {self.device} is already running")
        self._running = True
        session, reconnect = self._session, self._reconnect
        try:
            while True:
                try:
                    reader, writer = await self._link.open()
                except (OSError, ValueError) as exc:
                    reconnect.failed(self._link.open_failed(exc))
                    await self._wait_to_retry()
                    continue
                self._connected(writer)
                problem = STOPPED
                try:
                    problem = await self._read(reader)
                finally:
                    if self.capture is not None:
                        self.capture.closed(problem)
                    await self._close(writer)
                worked = not session.fresh_link
                emit(self._sink, session.link_lost(problem, time=time.time()))
                if worked:
                    reconnect.lost(problem)
                else:  # open, but not one frame: the outage goes on
                    reconnect.failed(problem)
                await self._wait_to_retry()
        finally:
            self._running = False
            emit(self._sink, session.stopped(STOPPED, time=time.time()))

    async def _wait_to_retry(self) -> None:
        """Wait the backoff's delay; but while the link is absent (a serial port unplugged),
        look every PRESENCE_POLL seconds, and retry as soon as it is back: bytes the
        device sends after its return are not lost to a long backoff."""
        if not self._link.absent():
            await self._reconnect.wait()
            return
        back = asyncio.Event()

        async def watch() -> None:
            while self._link.absent():
                await asyncio.sleep(PRESENCE_POLL)
            back.set()

        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(watch(), name=f"watch {self.where}")
            await self._reconnect.wait(back)
            watcher.cancel()

    async def write(self, data: bytes) -> None:
        """Send ``data`` (a command frame) to the device; return once the link took it.

        Raise :class:`DeviceUnavailable` if the link is not open, or fails meanwhile.
        """
        writer = self._writer
        if writer is None or writer.is_closing():
            raise DeviceUnavailable(f"device {self.device} is not connected ({self.where})")
        try:
            writer.write(data)
            await writer.drain()
        except OSError as exc:
            raise DeviceUnavailable(
                f"device {self.device}: writing {len(data)} bytes to {self.where} failed "
                f"({os_error_reason(exc)})"
            ) from exc

    def statistics(self) -> DecoderStatistics:
        """The decoder's counts so far."""
        return self._session.statistics()

    def state(self) -> dict[str, Any]:
        """The source as ``/healthz`` shows it: link, liveness and decoder statistics."""
        capture = self.capture.state() if self.capture is not None else None
        return self._session.record(
            LinkState(
                kind=self.kind,
                where=self.where,
                connected=self.connected,
                reconnects=self._reconnect.reconnects,
                last_error=self._reconnect.last_error,
                capture=capture,
            )
        )

    def _connected(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._session.opened()
        if self.capture is not None:
            self.capture.opened(self.where)
        failures = self._reconnect.failures
        if failures:
            attempts = "attempt" if failures == 1 else "attempts"
            logger.info(
                "%s: connected to %s after %d failed %s",
                self.device,
                self.where,
                failures,
                attempts,
            )
        else:
            logger.info("%s: connected to %s", self.device, self.where)

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Read until the link ends; return why it ended. Watch for silence meanwhile."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(self._session.silence_deadline) as silence:
                    return await self._pump(reader, silence)
            except TimeoutError:
                deadline = silence.when()
                if not silence.expired() or deadline is None:
                    raise
                now = max(loop.time(), deadline)
                emit(self._sink, self._session.tick(now=now, time=time.time()))

    async def _pump(self, reader: asyncio.StreamReader, silence: asyncio.Timeout) -> str:
        """Feed the session until the link ends; move ``silence`` as frames come."""
        loop = asyncio.get_running_loop()
        session, sink, capture = self._session, self._sink, self.capture
        deadline = session.silence_deadline
        try:
            while chunk := await reader.read(READ_SIZE):
                if capture is not None:
                    capture.data(chunk)
                emit(sink, session.receive(chunk, now=loop.time(), time=time.time()))
                if session.silence_deadline != deadline:
                    deadline = session.silence_deadline
                    silence.reschedule(deadline)
                # read() returns at once while the stream holds bytes: without this,
                # a source that is behind would hold the loop, and MQTT, the clients
                # and the other sources would wait until it caught up
                await asyncio.sleep(0)
        except OSError as exc:
            return self._link.lost(exc)
        return self._link.lost(None)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close the link, wait (a bounded time) until it is, flush the decoder."""
        self._writer = None
        if not writer.is_closing():
            self._link.shut(writer)
        try:
            with contextlib.suppress(OSError):  # the error the link died of; or timeout
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await writer.wait_closed()
        finally:
            now = asyncio.get_running_loop().time()
            emit(self._sink, self._session.interrupted(now=now, time=time.time()))


def make_source(
    config: SerialSourceConfig | TcpSourceConfig,
    schema: Schema,
    metrics: GatewayMetrics,
    sink: SourceSink,
    *,
    capture: CaptureWriter | None = None,
) -> LinkSource:
    """Return the source ``config`` describes, not yet running."""
    link: Link
    match config:
        case SerialSourceConfig():
            link = SerialLink(config)
        case TcpSourceConfig():
            link = TcpLink(config)
    return LinkSource(config, link, schema, metrics, sink, capture=capture)
