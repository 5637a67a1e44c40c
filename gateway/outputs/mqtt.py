"""The MQTT publisher: decoded messages and statuses out to a broker, buffered while it is away.

Topics, under ``<prefix>`` (``mqtt.topic_prefix``):

``<prefix>/<device>/<message>``
    Every envelope (its JSON bytes), with the configured QoS and retain flag.
``<prefix>/<device>/status``
    ``online`` or ``offline``, retained: the latest per device, re-published after
    every reconnect (a broker restarted without persistence has forgotten it).
``<prefix>/gateway/status``
    ``online``, retained, on every connect. The connection's last will is ``offline``,
    retained, so subscribers learn when the gateway dies or its link does;
    :meth:`MqttPublisher.close` publishes ``offline`` itself, because a clean
    disconnect does not trigger the will.

Statuses are published with QoS 1.

Delivery. :meth:`MqttPublisher.publish_message` never blocks: the message goes into
the :class:`~gateway.outputs.outbox.Outbox` (bounded; when full, the oldest message is dropped
and counted). :meth:`MqttPublisher.run` publishes the outbox in order, one message at
a time, and removes a message only once the broker has acknowledged it (PUBACK for QoS
1, PUBCOMP for QoS 2; for QoS 0, once it is written to the socket). A message whose
publish fails stays at the head and goes again after the reconnect: with QoS 1 or 2
nothing is lost silently, and a subscriber may see a message twice (QoS 1, when the
acknowledgement was lost with the connection). One message in flight at a time keeps
the order but bounds the rate to one message per round trip to the broker.

Device statuses are state, not events: only the latest per device matters. They are
not in the outbox (an overflow cannot drop them) and go out ahead of queued messages.

Metrics: ``tgw_mqtt_published`` counts outbox messages acknowledged by the broker
(statuses are not counted, so published + queued + dropped = offered);
``tgw_mqtt_publish_failures`` every publish (message or status) that failed or was
cut short by a lost connection; ``tgw_mqtt_dropped{reason}`` messages given up:
``queue_full`` (outbox overflow) or ``invalid`` (a topic or payload MQTT cannot
carry); ``tgw_mqtt_reconnects`` the connection attempts after a failure or a loss.

Why aiomqtt 2.x, that is paho driven by the event loop. paho's own ``loop_start()``
runs the network in a thread of its own: its callbacks would run in that thread, every
hand-over to the gateway would need a lock or ``call_soon_threadsafe``, and paho would
keep unsent messages in an internal queue of its own, unbounded and out of sight.
aiomqtt registers paho's socket with the running loop (``add_reader``/``add_writer``)
and runs paho's keepalive housekeeping as a task: every callback runs on the loop
thread, ``publish()`` is a coroutine that returns once the broker acknowledged the
message, and cancelling works as for any coroutine. The one thread left is paho's
blocking ``connect()`` (DNS and TCP), which aiomqtt runs in the default executor.

Each connection gets a new aiomqtt client (so a new paho client): paho keeps the QoS
1/2 messages it could not send and re-sends them after a reconnect of the *same*
client, which would duplicate what the outbox retries. A fresh client per connection
leaves the outbox the only queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttCodeError, MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from gateway.config import MqttConfig
from gateway.outputs.outbox import MemoryOutbox, OutboundMessage, Outbox
from gateway.runtime.backoff import backoff
from gateway.runtime.metrics import GatewayMetrics
from protocol.errors import os_error_reason

__all__ = ["GATEWAY", "OFFLINE", "ONLINE", "STATUS_QOS", "MqttPublisher"]

_log = logging.getLogger(__name__)
_paho_log = logging.getLogger(f"{__name__}.paho")

GATEWAY = "gateway"
"""The name in ``<prefix>/gateway/status``, the topic of the gateway's own status."""
ONLINE = b"online"
OFFLINE = b"offline"
STATUS_QOS = 1

_CLOSE_GRACE = 1.0
"""Seconds close() waits beyond its timeout for the clean disconnect."""
_CANCEL_GOODBYE = 1.0
"""Seconds a cancelled run() spends publishing the offline statuses."""

_CODE_PREFIX = re.compile(r"^\[(?:errno|code:)\s*-?\d+\]\s*", re.IGNORECASE)

_DISCONNECT_REASONS = {
    "Unspecified error": "closed by the broker or the network",
    "Keep alive timeout": "no answer from the broker within the keepalive",
}


class MqttPublisher:
    """Publishes envelopes and statuses to the broker of ``config``, reconnecting forever.

    The gateway calls :meth:`publish_message` and :meth:`set_device_status` (they
    never block; call them from the event loop's thread), runs :meth:`run` as a task,
    and at shutdown awaits :meth:`close` before cancelling that task.
    """

    def __init__(
        self, config: MqttConfig, metrics: GatewayMetrics, *, outbox: Outbox | None = None
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._outbox: Outbox = outbox if outbox is not None else MemoryOutbox(config.queue_size)
        self._broker = f"{config.host}:{config.port}"
        self._statuses: dict[str, bool] = {}
        self._unsent: dict[str, None] = {}
        """Devices whose latest status is not published on this connection yet, in order."""
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._deadline = 0.0
        self._running = False
        self._connected = False
        self._in_flight = False
        self._published = 0
        self._dropped = 0
        self._burst = 0
        self._last_error: str | None = None
        metrics.mqtt_connected.set(0)
        metrics.mqtt_queue_depth.set(len(self._outbox))

    # -- topics ------------------------------------------------------------------------

    def message_topic(self, topic: str) -> str:
        """The MQTT topic of an envelope topic ``device/message``."""
        return f"{self._config.topic_prefix}/{topic}"

    def status_topic(self, device: str) -> str:
        """The retained status topic of ``device``; :data:`GATEWAY` for the gateway's own."""
        return f"{self._config.topic_prefix}/{device}/status"

    # -- what the gateway calls --------------------------------------------------------

    def _backoff(self) -> Iterator[float]:
        return backoff(initial=self._config.reconnect_initial, maximum=self._config.reconnect_max)

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._connected

    @property
    def outbox(self) -> Outbox:
        """The messages waiting for the broker."""
        return self._outbox

    def state(self) -> dict[str, Any]:
        """For the health endpoint: connection, queue depth, counts, the last error."""
        return {
            "connected": self._connected,
            "queue_depth": len(self._outbox),
            "published": self._published,
            "dropped": self._dropped,
            "last_error": self._last_error,
        }

    def publish_message(self, topic: str, payload: bytes) -> None:
        """Queue ``payload`` for ``<prefix>/<topic>``; ``topic`` is the envelope's
        ``device/message``. Never blocks: when the outbox is full, the oldest message
        is dropped (and counted)."""
        self._put(
            OutboundMessage(
                self.message_topic(topic), payload, self._config.qos, self._config.retain
            )
        )

    def set_device_status(self, device: str, online: bool) -> None:
        """Record ``device`` online or offline; the retained status follows when connected.

        Only the latest status of a device is published. After :meth:`close` has begun,
        every device is offline.
        """
        if self._closing.is_set():
            online = False
        if self._statuses.get(device) is online:
            return
        self._statuses[device] = online
        self._unsent[device] = None
        self._wakeup.set()

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

    async def close(self, timeout: float = 5.0) -> None:
        """Say goodbye: every device and the gateway ``offline`` (retained), then publish
        what is queued, within ``timeout`` seconds, and disconnect cleanly.

        If :meth:`run` is waiting to reconnect, it tries once more at once. Messages
        still queued at the end stay in the outbox (and are lost with a
        :class:`MemoryOutbox`); a warning says how many.
        """
        if not self._closing.is_set():
            self._deadline = asyncio.get_running_loop().time() + timeout
            for device in list(self._statuses):
                self.set_device_status(device, False)
            self._closing.set()
            self._wakeup.set()
        if self._running:
            try:
                async with asyncio.timeout(timeout + _CLOSE_GRACE):
                    await self._stopped.wait()
            except TimeoutError:
                _log.warning("mqtt publisher did not stop within %.1f s", timeout + _CLOSE_GRACE)
        if self._outbox:
            _log.warning("mqtt closed with %d messages not published", len(self._outbox))

    # -- the connection loop -----------------------------------------------------------

    async def _run(self) -> None:
        delays = self._backoff()
        retry = False  # the next attempt follows a failure or a loss
        outage = False  # a warning was logged for the current outage
        while True:
            if retry:
                self._metrics.mqtt_reconnects.inc()
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                reason = self._reason(exc)
            else:
                return
            was_connected = self._connected
            self._set_connected(False)
            if self._in_flight:
                self._metrics.mqtt_publish_failures.inc()
            self._last_error = reason
            if was_connected:
                delays = self._backoff()
                _log.warning("mqtt connection to %s lost: %s; reconnecting", self._broker, reason)
            elif not outage:
                _log.warning("cannot connect to mqtt %s: %s; retrying", self._broker, reason)
            else:
                _log.debug("mqtt %s still unreachable: %s", self._broker, reason)
            outage = True
            if self._closing.is_set():
                _log.info("mqtt: closing without a connection to %s", self._broker)
                return
            retry = True
            await self._sleep_unless_closing(next(delays))

    async def _session(self) -> None:
        """Connect, then publish until closed; raise MqttError when the connection fails."""
        self._in_flight = False
        async with self._client() as client:
            self._set_connected(True)
            _log.info("connected to mqtt %s", self._broker)
            try:
                await self._serve(client)
            except asyncio.CancelledError:
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
        if not self._outbox and self._burst:
            _log.info("mqtt outbox drained; %d messages were dropped while full", self._burst)
            self._burst = 0

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

    async def _sleep_unless_closing(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._closing.wait()
        except TimeoutError:
            pass

    def _reason(self, exc: BaseException) -> str:
        """Why ``exc`` happened, in lower-case words: "connection refused"."""
        while exc.__cause__ is not None:
            exc = exc.__cause__
        if str(exc) == "Operation timed out":  # aiomqtt's timeout (CONNACK, PUBACK)
            return f"no answer from the broker within {self._config.keepalive} s"
        if isinstance(exc, OSError):
            return os_error_reason(exc) or type(exc).__name__
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
