"""Sources: the links to devices (a serial port, a serial port behind a TCP server).

A source owns one link and one :class:`protocol.decoder.StreamDecoder`. It stays thin:
every chunk read goes to the decoder, every frame becomes an :class:`Envelope` handed
to the sink, every stream error is counted. The gateway runs one per device::

    source = make_source(config, schema, metrics, sink)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(source.run(), name=f"source {source.device}")

:meth:`Source.run` never returns on its own: when the port cannot be opened, vanishes
or the connection drops, it reports what the decoder held, logs the outage once (a
WARNING an operator can act on, DEBUG for every further attempt), waits the next delay
of :func:`gateway.runtime.backoff.backoff` and tries again, so the gateway starts without the
device and picks it up when it appears. Reading blocks in the event loop (no polling),
so idle ports cost nothing. Cancel the task to stop it: the port is closed on the way
out.

The device is *online* from the first frame after a (re)connect until the link is lost
or no frame has arrived for ``silence_timeout`` seconds; each change is reported once
to :meth:`SourceSink.status` and in ``tgw_device_online``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol

import prometheus_client
import serial
import serial_asyncio_fast

from gateway.config import ReplaySourceConfig, SerialSourceConfig, TcpSourceConfig
from gateway.runtime.backoff import backoff
from gateway.runtime.capture import CaptureWriter
from gateway.runtime.envelope import UNKNOWN_MESSAGE, Envelope
from gateway.runtime.metrics import GatewayMetrics
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError
from protocol.events import Event, Frame, StreamError
from protocol.records import statistics_record
from protocol.schema import Schema

__all__ = [
    "DeviceUnavailable",
    "SerialSource",
    "Source",
    "SourceSink",
    "TcpSource",
    "make_source",
]

logger = logging.getLogger(__name__)

READ_SIZE = 65536
"""Most bytes taken from the link per read."""
READ_LIMIT = 65536
"""Bytes the stream reader buffers before it stops reading the link (twice this, in fact)."""
CONNECT_TIMEOUT = 10.0
"""Seconds to wait for a TCP connection before counting the attempt as failed."""
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

CONNECTED = "connected"
"""Status reason: the first frame after the link was (re)opened."""
RECEIVING_AGAIN = "receiving again"
"""Status reason: the first frame after a silence."""
STOPPED = "source stopped"
"""Status reason: the source was cancelled (the gateway is shutting down)."""


class SourceSink(Protocol):
    """Where a source delivers. Both methods are called from the event loop: never block."""

    def frame(self, envelope: Envelope) -> None:
        """Take one decoded frame."""
        ...

    def status(self, device: str, online: bool, reason: str) -> None:
        """Take a change of the device's state: online, or offline and why."""
        ...


class DeviceUnavailable(GatewayError):  # noqa: N818 - a state, like fwsim's LinkDown
    """Raised by :meth:`Source.write` when the device's link is not open."""


class Source(abc.ABC):
    """One device's link: read, decode, deliver, reconnect. Subclasses open the link.

    Call :meth:`run` in a task and cancel it to stop; :meth:`write` sends bytes down to
    the device meanwhile; :meth:`state` says how it is doing. ``schema`` is the one the
    device speaks: build command frames for it with
    :class:`protocol.encoder.FrameEncoder`.
    """

    kind: ClassVar[str]
    """``serial``, ``tcp`` or ``replay``, as in the configuration."""
    config: SerialSourceConfig | TcpSourceConfig | ReplaySourceConfig

    def __init__(
        self,
        config: SerialSourceConfig | TcpSourceConfig | ReplaySourceConfig,
        schema: Schema,
        metrics: GatewayMetrics,
        sink: SourceSink,
    ) -> None:
        self.config = config
        self.schema = schema
        self._metrics = metrics
        self._sink = sink
        self._decoder = StreamDecoder(schema)
        device = config.device
        self._bytes_read = metrics.bytes_read.labels(device)
        self._bytes_skipped = metrics.bytes_skipped.labels(device)
        self._online_gauge = metrics.device_online.labels(device)
        self._online_gauge.set(0)
        self._frame_counters: dict[str, prometheus_client.Counter] = {}
        self._skipped_counted = 0
        self._writer: asyncio.StreamWriter | None = None
        self._online = False
        self._fresh_link = False
        self._last_frame: float | None = None
        self._reconnects = 0
        self._last_error: str | None = None
        self._running = False
        self.capture: CaptureWriter | None = None
        """Set by the gateway when the device's bytes are recorded: every read goes to it."""

    @property
    def device(self) -> str:
        """The device's name, as configured."""
        return self.config.device

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """Where the device is: the serial port's path, or ``host:port``."""

    @property
    def connected(self) -> bool:
        """True while the link is open (the device may still be silent)."""
        return self._writer is not None

    @property
    def online(self) -> bool:
        """True from the first frame after a connect until the link is lost or goes silent."""
        return self._online

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
        delays = self._backoff()
        outage = False  # a failure was logged and the link is not back yet
        failed = 0  # attempts to open that failed in this outage
        try:
            while True:
                try:
                    reader, writer = await self._open()
                except (OSError, ValueError) as exc:
                    delay = next(delays)
                    self._retry(self._open_failed(exc), delay, first=not outage)
                    outage, failed = True, failed + 1
                    await asyncio.sleep(delay)
                    continue
                self._connected(writer, failed)
                problem = STOPPED
                try:
                    problem = await self._read(reader)
                finally:
                    if self.capture is not None:
                        self.capture.closed(problem)
                    await self._close(writer)
                if self._fresh_link:  # open, but not one frame: the outage goes on
                    failed += 1
                else:  # the link worked: this is a new outage, with short delays again
                    delays, outage, failed = self._backoff(), False, 0
                self._set_online(False, f"link lost: {problem}", level=logging.INFO)
                delay = next(delays)
                self._retry(problem, delay, first=not outage)
                outage = True
                await asyncio.sleep(delay)
        finally:
            self._running = False
            self._set_online(False, STOPPED, level=logging.INFO)

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
                f"({_reason(exc)})"
            ) from exc

    def state(self) -> dict[str, Any]:
        """The source as ``/healthz`` shows it: link, liveness and decoder statistics."""
        return {
            "device": self.device,
            "kind": self.kind,
            "where": self.where,
            "connected": self.connected,
            "online": self._online,
            "last_frame": self._last_frame,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
            "decoder": statistics_record(self._decoder.statistics()),
            "capture": self.capture.state() if self.capture is not None else None,
        }

    @abc.abstractmethod
    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the link; raise OSError (or ValueError for impossible settings) if it fails."""

    @abc.abstractmethod
    def _open_failed(self, exc: OSError | ValueError) -> str:
        """Say why the link could not be opened, in an operator's words."""

    @abc.abstractmethod
    def _lost(self, exc: OSError | None) -> str:
        """Say why an open link ended (None: end of input), in an operator's words."""

    def _shut(self, writer: asyncio.StreamWriter) -> None:
        """Start closing the link (it may have closed itself already)."""
        writer.close()

    def _backoff(self) -> Iterator[float]:
        return backoff(initial=self.config.reconnect_initial, maximum=self.config.reconnect_max)

    def _retry(self, problem: str, delay: float, *, first: bool) -> None:
        """Count and log a failed or lost link before waiting ``delay`` to try again.

        The first failure of an outage is a WARNING; a different failure later in the
        same outage is INFO, and every attempt that fails the same way again is DEBUG.
        """
        self._reconnects += 1
        self._metrics.reconnects.labels(self.device).inc()
        if first:
            level = logging.WARNING
        elif problem != self._last_error:
            level = logging.INFO
        else:
            level = logging.DEBUG
        self._last_error = problem
        logger.log(level, "%s: %s; retrying in %.3g s", self.device, problem, delay)

    def _connected(self, writer: asyncio.StreamWriter, failures: int) -> None:
        self._writer = writer
        self._fresh_link = True
        if self.capture is not None:
            self.capture.opened(self.where)
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
        while True:
            try:
                async with asyncio.timeout(None) as silence:
                    return await self._pump(reader, silence)
            except TimeoutError:
                if not silence.expired():
                    raise
                self._set_online(False, f"silent for {self.config.silence_timeout:g} s")

    async def _pump(self, reader: asyncio.StreamReader, silence: asyncio.Timeout) -> str:
        """Feed the decoder until the link ends; push ``silence`` back after every frame."""
        loop = asyncio.get_running_loop()
        timeout = self.config.silence_timeout
        capture = self.capture
        try:
            while chunk := await reader.read(READ_SIZE):
                if capture is not None:
                    capture.data(chunk)
                self._bytes_read.inc(len(chunk))
                if self._deliver(self._decoder.feed(chunk)):
                    silence.reschedule(loop.time() + timeout)
        except OSError as exc:
            return self._lost(exc)
        return self._lost(None)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close the link, wait (a bounded time) until it is, flush the decoder."""
        self._writer = None
        if not writer.is_closing():
            self._shut(writer)
        try:
            with contextlib.suppress(OSError):  # the error the link died of; or timeout
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await writer.wait_closed()
        finally:
            self._deliver(self._decoder.finish())

    def _deliver(self, events: list[Event]) -> bool:
        """Count ``events`` and hand their frames to the sink; say if there were frames."""
        frames = False
        if events:
            received = time.time()
            for event in events:
                match event:
                    case Frame():
                        self._frame(event, received)
                        frames = True
                    case StreamError(kind=kind):
                        self._metrics.decode_errors.labels(self.device, kind.value).inc()
        skipped = self._decoder.statistics().bytes_skipped
        if skipped != self._skipped_counted:
            self._bytes_skipped.inc(skipped - self._skipped_counted)
            self._skipped_counted = skipped
        return frames

    def _frame(self, frame: Frame, received: float) -> None:
        message = frame.message or UNKNOWN_MESSAGE
        counter = self._frame_counters.get(message)
        if counter is None:
            counter = self._frame_counters[message] = self._metrics.frames.labels(
                self.device, message
            )
        counter.inc()
        self._last_frame = received
        if not self._online:
            self._set_online(True, CONNECTED if self._fresh_link else RECEIVING_AGAIN)
        self._fresh_link = False
        self._sink.frame(
            Envelope(self.device, frame, received=received, include_raw=self.config.include_raw)
        )

    def _set_online(self, online: bool, reason: str, *, level: int = logging.WARNING) -> None:
        """Record a change of state (nothing if there is none); going online logs at INFO."""
        if online == self._online:
            return
        self._online = online
        self._online_gauge.set(1 if online else 0)
        if online:
            logger.info("%s: online (%s)", self.device, reason)
        else:
            logger.log(level, "%s: offline (%s)", self.device, reason)
        self._sink.status(self.device, online, reason)


class SerialSource(Source):
    """A device on a serial port (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``, a PTY)."""

    kind = "serial"
    config: SerialSourceConfig

    def __init__(
        self,
        config: SerialSourceConfig,
        schema: Schema,
        metrics: GatewayMetrics,
        sink: SourceSink,
    ) -> None:
        super().__init__(config, schema, metrics, sink)

    @property
    def where(self) -> str:
        """The port's path, as configured."""
        return self.config.path

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        config = self.config
        return await serial_asyncio_fast.open_serial_connection(
            url=config.path,
            baudrate=config.baud,
            parity=PARITY[config.parity],
            stopbits=STOP_BITS[config.stop_bits],
            rtscts=config.flow_control == "rtscts",
            xonxoff=config.flow_control == "xonxoff",
            limit=READ_LIMIT,
        )

    def _open_failed(self, exc: OSError | ValueError) -> str:
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            return f"{self.where} is absent (no such file or directory)"
        return f"cannot open {self.where} ({_reason(exc)})"

    def _lost(self, exc: OSError | None) -> str:
        reason = "end of input" if exc is None else _reason(exc)
        return f"{self.where} disappeared ({reason})"

    def _shut(self, writer: asyncio.StreamWriter) -> None:
        # Abort rather than close: a graceful close waits in a thread for the output to
        # drain (tcdrain), forever if hardware flow control holds it. write() has
        # already waited for what it sent to leave the transport.
        writer.transport.abort()


class TcpSource(Source):
    """A device behind a TCP server that relays a serial port (ser2net and the like)."""

    kind = "tcp"
    config: TcpSourceConfig

    def __init__(
        self,
        config: TcpSourceConfig,
        schema: Schema,
        metrics: GatewayMetrics,
        sink: SourceSink,
    ) -> None:
        super().__init__(config, schema, metrics, sink)

    @property
    def where(self) -> str:
        """``host:port`` (``[host]:port`` for an IPv6 address)."""
        host = self.config.host
        return f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await asyncio.open_connection(
                self.config.host, self.config.port, limit=READ_LIMIT
            )

    def _open_failed(self, exc: OSError | ValueError) -> str:
        return f"cannot connect to {self.where} ({_reason(exc)})"

    def _lost(self, exc: OSError | None) -> str:
        if exc is None:
            return f"{self.where} closed the connection"
        return f"connection to {self.where} lost ({_reason(exc)})"


def make_source(
    config: SerialSourceConfig | TcpSourceConfig,
    schema: Schema,
    metrics: GatewayMetrics,
    sink: SourceSink,
) -> Source:
    """Return the source ``config`` describes, not yet running."""
    match config:
        case SerialSourceConfig():
            return SerialSource(config, schema, metrics, sink)
        case TcpSourceConfig():
            return TcpSource(config, schema, metrics, sink)


def _reason(exc: BaseException) -> str:
    """Why an I/O operation failed, in lower case: "input/output error", "timed out".

    pyserial wraps the OSError it got (its message has the errno in brackets) or says
    "returned no data" when the port hung up; asyncio's connect errors carry the
    address in ``strerror``. The errno says it best when there is one.
    """
    if isinstance(exc, OSError):
        if isinstance(exc.errno, int) and exc.errno > 0:
            return os.strerror(exc.errno).lower()
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            return _reason(cause)
        if isinstance(exc, serial.SerialException) and "returned no data" in str(exc):
            return "hung up"
        if isinstance(exc, TimeoutError) and not str(exc):
            return "timed out"
        if exc.strerror:
            return exc.strerror.lower()
    return (str(exc) or type(exc).__name__).lower()
