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
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttCodeError, MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.config import MqttConfig
from gateway.outputs.disk_outbox import DiskOutbox
from gateway.outputs.outbox import MemoryOutbox, OutboundMessage, Outbox
from gateway.runtime.journal import Published
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import OutputContext
from gateway.runtime.reconnect import Reconnect, Wording
from gateway.runtime.status import DeviceStatus
from protocol.errors import ConfigError, os_error_reason

__all__ = ["GATEWAY", "OFFLINE", "ONLINE", "STATUS", "STATUS_QOS", "MqttPublisher", "build"]

_log = logging.getLogger(__name__)
_paho_log = logging.getLogger(f"{__name__}.paho")

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

_DISCONNECT_SECONDS = 0.5
"""Of the time close() has, what it keeps for the clean disconnect after the goodbye."""
_CANCEL_GOODBYE = 1.0
"""Seconds a run() cancelled without close() spends publishing the offline statuses."""

_OUTAGE = Wording(
    lost="mqtt connection to %(link)s lost: %(problem)s; reconnecting",
    failed="cannot connect to mqtt %(link)s: %(problem)s; retrying",
    failing="mqtt %(link)s still unreachable: %(problem)s",
)

_CODE_PREFIX = re.compile(r"^\[(?:errno|code:)\s*-?\d+\]\s*", re.IGNORECASE)

_DISCONNECT_REASONS = {
    "Unspecified error": "closed by the broker or the network",
    "Keep alive timeout": "no answer from the broker within the keepalive",
}


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
    if path is not None:
        outbox = DiskOutbox(
            Path(path),
            capacity=config.mqtt.queue_size,
            max_bytes=config.mqtt.outbox_max_bytes,
            commit_interval=config.mqtt.commit_interval,
            source=where,
        )
    return MqttPublisher(config.mqtt, context.metrics, outbox=outbox)


class MqttMetrics:
    """Connection, queue depth, messages published, failed and dropped, reconnects: made
    once per gateway by ``GatewayMetrics.group``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.mqtt_connected = Gauge(
            "tgw_mqtt_connected", "1 while connected to the MQTT broker", registry=registry
        )
        self.mqtt_queue_depth = Gauge(
            "tgw_mqtt_queue_depth", "Messages waiting for the MQTT broker", registry=registry
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
    (by default a :class:`MemoryOutbox` of ``queue_size`` messages).
    """

    name = "mqtt"

    def __init__(
        self, config: MqttConfig, metrics: GatewayMetrics, *, outbox: Outbox | None = None
    ) -> None:
        self._config = config
        self._metrics = metrics.group(MqttMetrics)
        self._outbox: Outbox = outbox if outbox is not None else MemoryOutbox(config.queue_size)
        self._broker = f"{config.host}:{config.port}"
        self._reconnect = Reconnect(
            self._broker,
            initial=config.reconnect_initial,
            maximum=config.reconnect_max,
            logger=_log,
            wording=_OUTAGE,
            counter=self._metrics.mqtt_reconnects,
        )
        self._statuses: dict[str, bool] = {}
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
        self._in_flight = False
        self._published = 0
        self._dropped = 0
        self._burst = 0
        self._metrics.mqtt_connected.set(0)
        self._metrics.mqtt_queue_depth.set(len(self._outbox))

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

    def health(self) -> Mapping[str, Any]:
        """Connection, queue depth, counts, the last error."""
        return {
            "connected": self._connected,
            "queue_depth": len(self._outbox),
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
                await self._connection()
            except aiomqtt.MqttError as exc:
                reason = self._reason(exc)
            else:
                return
            was_connected = self._connected
            self._set_connected(False)
            if self._in_flight:
                self._metrics.mqtt_publish_failures.inc()
            if was_connected:
                reconnect.lost(reason)
            else:
                reconnect.failed(reason)
            if self._closing.is_set():
                _log.info("mqtt: closing without a connection to %s", self._broker)
                return
            await reconnect.wait(self._closing)

    async def _connection(self) -> None:
        """Connect, then publish until closed; raise MqttError when the connection fails."""
        self._in_flight = False
        async with self._client() as client:
            self._set_connected(True)
            _log.info("connected to mqtt %s", self._broker)
            try:
                await self._serve(client)
            except asyncio.CancelledError:
                if not self._closing.is_set():  # close() has said goodbye already
                    await self._goodbye_on_cancel(client)
                raise
        self._set_connected(False)

    def _client(self) -> aiomqtt.Client:
        config = self._config
        return aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=config.password,
            identifier=config.client_id or f"tgw-{socket.gethostname()}-{os.getpid()}",
            will=aiomqtt.Will(self.status_topic(GATEWAY), OFFLINE, qos=STATUS_QOS, retain=True),
            clean_session=True,
            keepalive=config.keepalive,
            timeout=float(config.keepalive),
            logger=_paho_log,
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish until closed; raise MqttError when the connection fails."""
        try:
            async with asyncio.TaskGroup() as tasks:
                watcher = tasks.create_task(self._watch(client), name="mqtt-connection")
                await self._drain(client)
                watcher.cancel()
        except* aiomqtt.MqttError as group:
            error = _first(group)
            raise error from error.__cause__

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Raise MqttError when the connection is lost, even while nothing is published."""
        async for message in client.messages:
            _log.debug("ignoring an mqtt message on %s", message.topic)

    async def _drain(self, client: aiomqtt.Client) -> None:
        if not self._closing.is_set():
            await self._publish(client, self._status(GATEWAY, online=True))
        self._unsent = dict.fromkeys(self._statuses)
        while not self._closing.is_set():
            if self._unsent:
                await self._publish_status(client)
                continue
            item = self._outbox.peek()
            if item is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._publish_head(client, item)
        await self._goodbye(client)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Statuses offline, then the outbox, until it is empty or the deadline passes."""
        try:
            async with asyncio.timeout_at(self._deadline):
                while self._unsent:
                    await self._publish_status(client)
                await self._publish(client, self._status(GATEWAY, online=False))
                while (item := self._outbox.peek()) is not None:
                    await self._publish_head(client, item)
        except TimeoutError:
            self._in_flight = False
            _log.warning("mqtt close: time is up with %d messages not published", len(self._outbox))

    async def _goodbye_on_cancel(self, client: aiomqtt.Client) -> None:
        """Cancelled without close(): the offline statuses, if the broker takes them soon."""
        self._in_flight = False
        statuses = [self._status(device, online=False) for device in self._statuses]
        try:
            async with asyncio.timeout(_CANCEL_GOODBYE):
                for item in [*statuses, self._status(GATEWAY, online=False)]:
                    await self._publish(client, item)
        except TimeoutError:
            _log.debug("mqtt: no offline statuses on cancel within %.1f s", _CANCEL_GOODBYE)
        except aiomqtt.MqttError as exc:
            _log.debug("mqtt: no offline statuses on cancel: %s", self._reason(exc))

    # -- publishing --------------------------------------------------------------------

    def _status(self, device: str, *, online: bool) -> OutboundMessage:
        return OutboundMessage(
            self.status_topic(device), ONLINE if online else OFFLINE, STATUS_QOS, True
        )

    async def _publish(self, client: aiomqtt.Client, item: OutboundMessage) -> bool:
        """Publish ``item`` and wait for the acknowledgement; False if MQTT cannot carry it.

        Raises MqttError when the publish fails; ``_in_flight`` tells the caller that
        a publish was cut short.
        """
        self._in_flight = True
        try:
            await client.publish(item.topic, item.payload, qos=item.qos, retain=item.retain)
        except ValueError as exc:
            self._in_flight = False
            _log.error("mqtt cannot publish to %r: %s; dropped", item.topic, exc)
            return False
        except aiomqtt.MqttError:
            self._in_flight = False
            self._metrics.mqtt_publish_failures.inc()
            raise
        self._in_flight = False
        return True

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        device = next(iter(self._unsent))
        del self._unsent[device]
        await self._publish(client, self._status(device, online=self._statuses[device]))

    async def _publish_head(self, client: aiomqtt.Client, item: OutboundMessage) -> None:
        if await self._publish(client, item):
            self._published += 1
            self._metrics.mqtt_published.inc()
        else:
            self._count_drop("invalid")
        self._outbox.pop()
        self._metrics.mqtt_queue_depth.set(len(self._outbox))
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
        if self._outbox.put(item) is not None:
            self._count_drop("queue_full")
            if not self._burst:
                _log.warning(
                    "mqtt outbox full with %d messages waiting for %s: dropping the oldest",
                    len(self._outbox),
                    self._broker,
                )
            self._burst += 1
        self._metrics.mqtt_queue_depth.set(len(self._outbox))
        self._wakeup.set()

    def _count_drop(self, reason: str) -> None:
        self._dropped += 1
        self._metrics.mqtt_dropped.labels(reason=reason).inc()

    # -- state -------------------------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        self._metrics.mqtt_connected.set(1 if connected else 0)

    def _reason(self, exc: BaseException) -> str:
        """Why ``exc`` happened, in lower-case words: "connection refused"."""
        while exc.__cause__ is not None:
            exc = exc.__cause__
        if str(exc) == "Operation timed out":  # aiomqtt's timeout (CONNACK, PUBACK)
            return f"no answer from the broker within {self._config.keepalive} s"
        if isinstance(exc, OSError):
            return os_error_reason(exc)
        if isinstance(exc, MqttConnectError) and isinstance(exc.rc, ReasonCode):
            return f"refused by the broker: {exc.rc.getName().lower()}"
        if isinstance(exc, MqttCodeError) and isinstance(exc.rc, ReasonCode):
            name = exc.rc.getName()
            return _DISCONNECT_REASONS.get(name, name.lower())
        return _CODE_PREFIX.sub("", str(exc)).rstrip(".").lower() or type(exc).__name__


def _first(group: BaseExceptionGroup[aiomqtt.MqttError]) -> aiomqtt.MqttError:
    """The first MqttError of a TaskGroup's exception group."""
    error = group.exceptions[0]
    return error if isinstance(error, aiomqtt.MqttError) else _first(error)
