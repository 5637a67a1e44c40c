"""The MQTT output: decoded messages and device statuses to a broker, buffered while it is away.

:class:`MqttPublisher` is an :class:`~gateway.runtime.output.Output` (``mqtt``), built
by :func:`build` from ``[mqtt]``. What it publishes where, its delivery guarantees and
its metrics are in docs/mqtt.md. The caller must know: :meth:`~MqttPublisher.deliver`
never blocks (a full outbox drops its oldest message, counted); :meth:`~MqttPublisher.run`
reconnects forever and returns only after :meth:`~MqttPublisher.close`, which says
goodbye (every status ``offline``) and publishes what is queued until its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.config import MqttConfig
from gateway.outputs.disk_outbox import DiskOutbox
from gateway.outputs.mqtt_codec import MAX_PACKET_ID, Will
from gateway.outputs.mqtt_connection import MqttConnection, MqttError, open_connection
from gateway.outputs.outbox import Entry, MemoryOutbox, OutboundMessage, Outbox
from gateway.runtime.journal import Published
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import OutputContext
from gateway.runtime.reconnect import Reconnect, Wording
from gateway.runtime.status import DeviceStatus
from protocol.errors import ConfigError

__all__ = ["GATEWAY", "OFFLINE", "ONLINE", "STATUS", "STATUS_QOS", "MqttPublisher", "build"]

_log = logging.getLogger(__name__)

GATEWAY = "gateway"
"""The name in ``<prefix>/gateway/status``, the topic of the gateway's own status: no
device may be called so."""
STATUS = "status"
"""The last level of ``<prefix>/<device>/status``: no message may be called so."""
ONLINE = b"online"
OFFLINE = b"offline"
STATUS_QOS = 1
OUTBOX_FILE = "mqtt-outbox.sqlite"
"""The disk outbox's file in the state directory, unless ``[mqtt] outbox`` names one."""

QOS2_WINDOW = 20
"""Publishes in flight at most with QoS 2, whatever ``max_inflight`` says: mosquitto's
default ``max_inflight_messages``. Beyond its limit, mosquitto 2.0.11 (Debian 12's)
acknowledges QoS 2 publishes and discards them (measured with paho alone: 4,762 of 5,000
arrived with 21 in flight, all 5,000 with 20), and MQTT 3.1.1 gives a broker no way to
say its limit. QoS 1 is not affected and keeps the whole window."""
_MAX_WINDOW = MAX_PACKET_ID - 1
"""Publishes of the outbox in flight at most: one packet id is left for a status."""

_DISCONNECT_SECONDS = 0.5
"""Of the time close() has, what it keeps for the clean disconnect after the goodbye."""
_CANCEL_GOODBYE = 1.0
"""Seconds a run() cancelled without close() spends publishing the offline statuses."""

_OUTAGE = Wording(
    lost="mqtt connection to %(link)s lost: %(problem)s; reconnecting",
    failed="cannot connect to mqtt %(link)s: %(problem)s; retrying",
    failing="mqtt %(link)s still unreachable: %(problem)s",
)


def build(context: OutputContext) -> MqttPublisher | None:
    """The MQTT output of ``[mqtt]``, or None when it is not enabled.

    Raise :class:`~protocol.errors.ConfigError` naming the configuration file and the
    source's key when a device's topics would collide with a status topic: a device
    called :data:`GATEWAY`, or a catalog with a message called :data:`STATUS`.
    """
    config = context.config
    if not config.mqtt.enabled:
        return None
    where = config.source
    for index, source in enumerate(config.sources):
        if source.device == GATEWAY:
            raise ConfigError(
                where,
                f"sources[{index}].device",
                f"{GATEWAY!r} is reserved: <prefix>/{GATEWAY}/{STATUS} is the gateway's own "
                "status topic",
            )
        schema = context.schemas[source.device]
        if STATUS in schema.names:
            raise ConfigError(
                where,
                f"sources[{index}].catalog",
                f"catalog {schema.catalog.name!r} has a message called {STATUS!r}, whose "
                f"topic would be the device's online status (<prefix>/{source.device}/"
                f"{STATUS}); rename the message",
            )
    outbox: Outbox | None = None
    path = config.mqtt.outbox
    if path is None and config.state_dir is not None:
        path = str(Path(config.state_dir) / OUTBOX_FILE)
    metrics = context.metrics.group(MqttMetrics)
    if path is not None:
        outbox = DiskOutbox(
            Path(path),
            capacity=config.mqtt.queue_size,
            max_bytes=config.mqtt.outbox_max_bytes,
            commit_interval=config.mqtt.commit_interval,
            source=where,
            observe=metrics.mqtt_outbox_commit_seconds.observe,
            errors=context.metrics.state_file_error,
        )
    return MqttPublisher(
        config.mqtt,
        context.metrics,
        outbox=outbox,
        devices=[source.device for source in config.sources],
    )


class MqttMetrics:
    """Connection, queue depth, messages published, failed and dropped, reconnects: made
    once per gateway by ``GatewayMetrics.group``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.mqtt_connected = Gauge(
            "tgw_mqtt_connected", "1 while connected to the MQTT broker", registry=registry
        )
        self.mqtt_queue_depth = Gauge(
            "tgw_mqtt_queue_depth",
            "Messages in the outbox: waiting for the MQTT broker or in flight",
            registry=registry,
        )
        self.mqtt_inflight = Gauge(
            "tgw_mqtt_inflight",
            "Publishes sent and not acknowledged yet by the broker",
            registry=registry,
        )
        self.mqtt_outbox_bytes = Gauge(
            "tgw_mqtt_outbox_bytes", "Payload bytes in the outbox", registry=registry
        )
        self.mqtt_outbox_oldest_age = Gauge(
            "tgw_mqtt_outbox_oldest_age_seconds",
            "Age of the oldest message in the outbox (0 when empty)",
            registry=registry,
        )
        self.mqtt_outbox_commit_seconds = Histogram(
            "tgw_mqtt_outbox_commit_seconds",
            "Time a commit of the disk outbox took (write and fsync)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self.mqtt_published = Counter(
            "tgw_mqtt_published", "Messages published to MQTT", registry=registry
        )
        self.mqtt_publish_failures = Counter(
            "tgw_mqtt_publish_failures", "MQTT publishes that failed", registry=registry
        )
        self.mqtt_dropped = Counter(
            "tgw_mqtt_dropped",
            "Messages dropped before reaching MQTT",
            ["reason"],
            registry=registry,
        )
        self.mqtt_reconnects = Counter(
            "tgw_mqtt_reconnects",
            "MQTT connection attempts after a failure or loss",
            registry=registry,
        )


class MqttPublisher:
    """Publishes envelopes and statuses to the broker of ``config``, reconnecting forever.

    Call :meth:`deliver`, :meth:`publish_message` and :meth:`device_status` from the
    event loop's thread; they never block. ``outbox`` holds what waits for the broker
    (by default a :class:`MemoryOutbox` of ``queue_size`` messages). ``devices`` are
    the devices whose status it owns: each is published on every connect (``offline``
    until :meth:`device_status` says otherwise), so no status of a previous run stays.
    """

    name = "mqtt"

    def __init__(
        self,
        config: MqttConfig,
        metrics: GatewayMetrics,
        *,
        outbox: Outbox | None = None,
        devices: Iterable[str] = (),
    ) -> None:
        self._config = config
        self._metrics = metrics.group(MqttMetrics)
        self._outbox: Outbox = (
            outbox
            if outbox is not None
            else MemoryOutbox(config.queue_size, max_bytes=config.outbox_max_bytes)
        )
        self._broker = f"{config.host}:{config.port}"
        self._reconnect = Reconnect(
            self._broker,
            initial=config.reconnect_initial,
            maximum=config.reconnect_max,
            logger=_log,
            wording=_OUTAGE,
            counter=self._metrics.mqtt_reconnects,
        )
        self._statuses: dict[str, bool] = dict.fromkeys(devices, False)
        self._unsent: dict[str, None] = {}
        """Devices whose latest status is not published on this connection yet, in order."""
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        """Set when the outbox is down to a quarter of ``queue_size``."""
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._deadline = 0.0
        """Event loop time by which the goodbye ends (the disconnect follows)."""
        self._running = False
        self._connected = False
        self._disconnected_at: float | None = time.monotonic()
        """When the connection was lost or first tried (monotonic); None while connected."""
        self._connection: MqttConnection | None = None
        """The connection to the broker, while there is one."""
        self._window_size = min(
            config.max_inflight, QOS2_WINDOW if config.qos == 2 else _MAX_WINDOW
        )
        self._published = 0
        self._dropped = 0
        self._burst = 0
        self._metrics.mqtt_connected.set(0)
        self._metrics.mqtt_queue_depth.set_function(lambda: len(self._outbox))
        self._metrics.mqtt_inflight.set_function(self._inflight)
        self._metrics.mqtt_outbox_bytes.set_function(lambda: self._outbox.bytes)
        self._metrics.mqtt_outbox_oldest_age.set_function(self._oldest_age)

    # -- topics ------------------------------------------------------------------------

    def message_topic(self, topic: str) -> str:
        """The MQTT topic of an envelope topic ``device/message``."""
        return f"{self._config.topic_prefix}/{topic}"

    def status_topic(self, device: str) -> str:
        """The retained status topic of ``device``; :data:`GATEWAY` for the gateway's own."""
        return f"{self._config.topic_prefix}/{device}/{STATUS}"

    # -- the output --------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to acquire: :meth:`run` connects, and keeps trying."""

    def deliver(self, message: Published) -> None:
        """Queue the message's JSON for ``<prefix>/<device>/<message>``. Never blocks."""
        self.publish_message(message.topic, message.payload)

    def publish_message(self, topic: str, payload: bytes) -> None:
        """Queue ``payload`` for ``<prefix>/<topic>``; ``topic`` is the envelope's
        ``device/message``. Never blocks: when the outbox is full, the oldest message
        is dropped (and counted)."""
        self._put(
            OutboundMessage(
                self.message_topic(topic), payload, self._config.qos, self._config.retain
            )
        )

    def device_status(self, status: DeviceStatus) -> None:
        """Record the device online or offline; the retained status follows when connected.

        Only the latest status of a device is published. After :meth:`close` has begun,
        every device is offline.
        """
        self._set_status(status.device, status.online)

    async def wait_for_room(self) -> None:
        """Return at once while the outbox is at most half full; else once it is down to
        a quarter (a replay played as fast as possible waits here)."""
        capacity = self._config.queue_size
        if len(self._outbox) <= capacity // 2:
            return
        _log.debug("replay waits for MQTT: %d messages queued", len(self._outbox))
        while len(self._outbox) > capacity // 4:
            self._drained.clear()
            await self._drained.wait()

    def problems(self) -> Sequence[str]:
        """The broker away longer than ``readiness_outage``, an outbox fuller than
        ``readiness_queue``, or an outbox that cannot write to its disk."""
        config = self._config
        found = []
        if self._disconnected_at is not None:
            away = time.monotonic() - self._disconnected_at
            if away > config.readiness_outage:
                found.append(
                    f"mqtt broker {self._broker} unreachable for {away:.0f} s: "
                    f"{self._reconnect.last_error or 'not connected yet'}"
                )
        limit = config.readiness_queue or max(1, config.queue_size // 2)
        if len(self._outbox) > limit:
            found.append(f"mqtt outbox holds {len(self._outbox)} messages (over {limit})")
        if (error := self._outbox.write_error) is not None:
            found.append(f"mqtt outbox cannot write to disk: {error}")
        return found

    def health(self) -> Mapping[str, Any]:
        """Connection, outbox (depth, bytes, in flight, oldest age), counts, the last error."""
        return {
            "connected": self._connected,
            "queue_depth": len(self._outbox),
            "inflight": self._inflight(),
            "outbox_bytes": self._outbox.bytes,
            "oldest_age": round(self._oldest_age(), 3),
            "published": self._published,
            "dropped": self._dropped,
            "last_error": self._reconnect.last_error,
        }

    async def run(self) -> None:
        """Connect, publish, and reconnect with backoff, until :meth:`close` is done.

        Returns after :meth:`close`; cancel it to stop at once (it then publishes the
        offline statuses if it can within a second, and disconnects).
        """
        if self._running:
            raise RuntimeError("MqttPublisher.run() is running already")
        self._running = True
        self._stopped.clear()
        try:
            await self._run()
        finally:
            self._running = False
            self._set_connected(False)
            self._stopped.set()

    async def close(self, deadline: float) -> None:
        """Say goodbye: every device and the gateway ``offline`` (retained), then publish
        what is queued, and disconnect cleanly; return by ``deadline`` (event loop time).

        If :meth:`run` is waiting to reconnect, it tries once more at once. Messages
        still queued at the end stay in the outbox (and are lost with a
        :class:`MemoryOutbox`); a warning says how many.
        """
        if not self._closing.is_set():
            left = deadline - asyncio.get_running_loop().time()
            self._deadline = deadline - min(_DISCONNECT_SECONDS, max(0.0, left) / 4)
            for device in list(self._statuses):
                self._set_status(device, False)
            self._closing.set()
            self._wakeup.set()
        if self._running:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._stopped.wait()
            except TimeoutError:
                _log.warning("mqtt publisher did not stop by the shutdown deadline")
        if self._outbox:
            _log.warning("mqtt closed with %d messages not published", len(self._outbox))
        await asyncio.to_thread(self._outbox.close)

    # -- the connection loop -----------------------------------------------------------

    async def _run(self) -> None:
        reconnect = self._reconnect
        while True:
            try:
                await self._connect_and_serve()
            except MqttError as exc:
                reason = str(exc)
            else:
                return
            was_connected = self._connected
            self._set_connected(False)
            if was_connected:
                reconnect.lost(reason)
            else:
                reconnect.failed(reason)
            if self._closing.is_set():
                _log.info("mqtt: closing without a connection to %s", self._broker)
                return
            await reconnect.wait(self._closing)

    async def _connect_and_serve(self) -> None:
        """Connect, then publish until closed; raise MqttError when the connection fails.

        What is in flight when the connection ends goes again on the next one, from the
        oldest message not acknowledged (:meth:`Outbox.rewind`).
        """
        config = self._config
        connection = await open_connection(
            config.host,
            config.port,
            client_id=config.client_id or f"tgw-{socket.gethostname()}-{os.getpid()}",
            keepalive=config.keepalive,
            will=Will(self.status_topic(GATEWAY), OFFLINE, STATUS_QOS, True),
            username=config.username,
            password=config.password,
            timeout=float(config.keepalive),
            acknowledged=self._acknowledged,
            wake=self._wakeup.set,
        )
        self._connection = connection
        self._set_connected(True)
        _log.info("connected to mqtt %s", self._broker)
        try:
            self._outbox.rewind()
            await self._drain(connection)
        except asyncio.CancelledError:
            if not self._closing.is_set():  # close() has said goodbye already
                await self._goodbye_on_cancel(connection)
            raise
        finally:
            self._connection = None
            if cut := connection.forget():
                self._metrics.mqtt_publish_failures.inc(cut)
            await connection.close()
        self._set_connected(False)

    async def _drain(self, connection: MqttConnection) -> None:
        if not self._closing.is_set():
            await self._publish(connection, self._status(GATEWAY, online=True))
        self._unsent = dict.fromkeys(self._statuses)
        while not self._closing.is_set():
            connection.check()
            if self._unsent:
                await self._publish_status(connection)
            elif not self._send_window(connection):
                self._wakeup.clear()
                await self._wakeup.wait()
        await self._goodbye(connection)

    def _send_window(self, connection: MqttConnection) -> bool:
        """Publish the next messages of the outbox, as many as the window has room for;
        False if none could be sent (the outbox or the window is empty)."""
        if connection.paused:
            return False
        entries = self._outbox.take(self._window_size - len(connection))
        if entries:
            for entry, reason in connection.publish(entries):
                _log.error("mqtt cannot publish to %r: %s; dropped", entry.message.topic, reason)
                self._count_drop("invalid")
                self._outbox.acknowledge(entry.ident)
                self._settled()
        return bool(entries)

    async def _goodbye(self, connection: MqttConnection) -> None:
        """Statuses offline, then the outbox, until it is empty or the deadline passes."""
        try:
            async with asyncio.timeout_at(self._deadline):
                while self._unsent:
                    await self._publish_status(connection)
                await self._publish(connection, self._status(GATEWAY, online=False))
                while self._outbox:
                    connection.check()
                    if not self._send_window(connection):
                        self._wakeup.clear()
                        await self._wakeup.wait()
        except TimeoutError:
            _log.warning("mqtt close: time is up with %d messages not published", len(self._outbox))

    async def _goodbye_on_cancel(self, connection: MqttConnection) -> None:
        """Cancelled without close(): the offline statuses, if the broker takes them soon."""
        statuses = [self._status(device, online=False) for device in self._statuses]
        try:
            async with asyncio.timeout(_CANCEL_GOODBYE):
                for item in [*statuses, self._status(GATEWAY, online=False)]:
                    await self._publish(connection, item)
        except TimeoutError:
            _log.debug("mqtt: no offline statuses on cancel within %.1f s", _CANCEL_GOODBYE)
        except MqttError as exc:
            _log.debug("mqtt: no offline statuses on cancel: %s", exc)

    # -- publishing --------------------------------------------------------------------

    def _status(self, device: str, *, online: bool) -> OutboundMessage:
        return OutboundMessage(
            self.status_topic(device), ONLINE if online else OFFLINE, STATUS_QOS, True
        )

    async def _publish(self, connection: MqttConnection, item: OutboundMessage) -> bool:
        """Publish ``item`` and wait for the acknowledgement; False if MQTT cannot carry it.

        For the statuses; the outbox's messages go in windows (:meth:`_send_window`).
        Raises MqttError when the publish fails; a publish that fails or is cancelled
        (its connection lost) is counted in ``tgw_mqtt_publish_failures``.
        """
        try:
            await connection.publish_and_wait(item)
        except ValueError as exc:
            _log.error("mqtt cannot publish to %r: %s; dropped", item.topic, exc)
            return False
        except (MqttError, asyncio.CancelledError):
            self._metrics.mqtt_publish_failures.inc()
            raise
        return True

    async def _publish_status(self, connection: MqttConnection) -> None:
        device = next(iter(self._unsent))
        del self._unsent[device]
        await self._publish(connection, self._status(device, online=self._statuses[device]))

    def _acknowledged(self, entries: list[Entry]) -> None:
        """The broker has ``entries`` (a batch: every acknowledgement of one read)."""
        count = len(entries)
        self._published += count
        self._metrics.mqtt_published.inc(count)
        acknowledge = self._outbox.acknowledge
        for entry in entries:
            acknowledge(entry.ident)
        self._settled()

    def _settled(self) -> None:
        """Messages left the outbox (acknowledged or dropped): wake the publisher."""
        self._wakeup.set()
        if len(self._outbox) <= self._config.queue_size // 4:
            self._drained.set()
        if not self._outbox and self._burst:
            _log.info("mqtt outbox drained; %d messages were dropped while full", self._burst)
            self._burst = 0

    def _set_status(self, device: str, online: bool) -> None:
        if self._closing.is_set():
            online = False
        if self._statuses.get(device) is online:
            return
        self._statuses[device] = online
        self._unsent[device] = None
        self._wakeup.set()

    def _put(self, item: OutboundMessage) -> None:
        if dropped := self._outbox.put(item):
            self._dropped += dropped
            self._metrics.mqtt_dropped.labels(reason="queue_full").inc(dropped)
            if not self._burst:
                _log.warning(
                    "mqtt outbox full with %d messages waiting for %s: dropping the oldest",
                    len(self._outbox),
                    self._broker,
                )
            self._burst += dropped
        self._wakeup.set()

    def _count_drop(self, reason: str) -> None:
        self._dropped += 1
        self._metrics.mqtt_dropped.labels(reason=reason).inc()

    # -- state -------------------------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        if connected:
            self._disconnected_at = None
        elif self._disconnected_at is None:
            self._disconnected_at = time.monotonic()
        self._connected = connected
        self._metrics.mqtt_connected.set(1 if connected else 0)

    def _inflight(self) -> int:
        return 0 if self._connection is None else len(self._connection)

    def _oldest_age(self) -> float:
        oldest = self._outbox.oldest
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)
