"""The gateway: sources in, hub and MQTT out, in one TaskGroup.

:class:`Gateway` wires the parts and is the single place where a decoded frame goes
on: it is the sources' sink (frames and device status), the WebSocket server's
command sink, and the provider of the hello message and the health report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway import __version__
from gateway.config import GatewayConfig, ReplaySourceConfig, SourceConfig
from gateway.outputs.mqtt import MqttPublisher
from gateway.outputs.websocket import build as build_websocket
from gateway.runtime.capture import CaptureWriter
from gateway.runtime.envelope import Envelope
from gateway.runtime.http import HttpEndpoints, standalone_http_server
from gateway.runtime.journal import Journal
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import OutputContext
from gateway.runtime.replay import ReplaySource
from gateway.runtime.sources import Source, make_source
from gateway.runtime.status import DeviceStatus
from protocol.capture import CaptureHeader
from protocol.catalog import Direction
from protocol.encoder import FrameEncoder
from protocol.errors import ConfigError, EncodeError, GatewayError
from protocol.profile import HeaderRole
from protocol.schema import Schema, load_schema

__all__ = ["CommandError", "Gateway"]

logger = logging.getLogger(__name__)

DEVICE_STATUS_TOPIC = "status"
"""The last level of ``<prefix>/<device>/status``: no message may be called so."""

COMMAND_WRITE_SECONDS = 5.0
"""How long a command may wait for the device's link (a stuck flow control) before failing."""

ROOM_POLL_SECONDS = 0.05
"""How often a replay that waits for MQTT's queue to drain looks again."""

SHUTDOWN_FLUSH_SECONDS = 5.0
"""How long a shutdown waits for MQTT to take what is queued."""


class CommandError(GatewayError):
    """A command cannot be sent: unknown device or message, bad fields, device away."""


class Gateway:
    """One gateway. Build it from a validated config, then ``await run(stop)``."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.journal = Journal(history=config.websocket.history)
        schemas: dict[tuple[str, str], Schema] = {}
        self.sources: dict[str, Source] = {}
        self._encoders: dict[str, FrameEncoder] = {}
        self._command_sequence: dict[str, int] = {}
        for index, source_config in enumerate(config.sources):
            key = (source_config.profile, source_config.catalog)
            if key not in schemas:
                schemas[key] = load_schema(*key)
            schema = schemas[key]
            if DEVICE_STATUS_TOPIC in schema.names:
                raise ConfigError(
                    config.source,
                    f"sources[{index}].catalog",
                    f"catalog {schema.catalog.name!r} has a message called "
                    f"{DEVICE_STATUS_TOPIC!r}, whose topic would be the device's online status "
                    f"(<prefix>/{source_config.device}/{DEVICE_STATUS_TOPIC}); rename the message",
                )
            source = self.sources[source_config.device] = _make_source(
                source_config, schema, self.metrics, self
            )
            if isinstance(source, ReplaySource):
                source.room = self.room_for_more
            elif config.captures(source.device):
                source.capture = CaptureWriter(
                    config.capture,
                    CaptureHeader(
                        source=source.device,
                        profile=source_config.profile,
                        catalog=source_config.catalog,
                        kind=source.kind,
                        where=source.where,
                    ),
                    self.metrics,
                )
            self._encoders[source_config.device] = FrameEncoder(schema)
            self.metrics.device_online.labels(source_config.device).set(0)
        self.mqtt = MqttPublisher(config.mqtt, self.metrics) if config.mqtt.enabled else None
        self.http = HttpEndpoints(health=self.health, metrics=self.metrics)
        self.websocket = build_websocket(
            OutputContext(
                config=config,
                config_path=None,
                metrics=self.metrics,
                journal=self.journal,
                http=self.http,
                schemas={device: source.schema for device, source in self.sources.items()},
                hello=self.hello,
                commands=self,
            )
        )
        self.http_server = standalone_http_server(config, self.http)
        self.started = asyncio.Event()

    # The sources' sink.

    def frame(self, envelope: Envelope) -> None:
        """A decoded frame: number it, fan it out to WebSocket subscribers and MQTT."""
        published = self.journal.append(envelope)
        if self.websocket is not None:
            self.websocket.deliver(published)
        if self.mqtt is not None:
            self.mqtt.publish_message(published.topic, published.payload)

    def status(self, device: str, online: bool, reason: str) -> None:
        """A device came online or went offline: tell subscribers and the broker."""
        device_status = DeviceStatus(device, online, reason, time.time())
        self.journal.record_status(device_status)
        if self.websocket is not None:
            self.websocket.device_status(device_status)
        if self.mqtt is not None:
            self.mqtt.set_device_status(device, online)

    async def room_for_more(self) -> None:
        """Wait while MQTT's queue is more than half full (a replay as fast as possible)."""
        mqtt = self.mqtt
        if mqtt is None:
            await asyncio.sleep(0)
            return
        capacity = self.config.mqtt.queue_size
        if len(mqtt.outbox) <= capacity // 2:
            await asyncio.sleep(0)
            return
        logger.debug("replay waits for MQTT: %d messages queued", len(mqtt.outbox))
        while len(mqtt.outbox) > capacity // 4:
            await asyncio.sleep(ROOM_POLL_SECONDS)

    # The WebSocket server's command sink.

    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        """Encode ``message`` for ``device`` and write it; raise CommandError saying why not."""
        source = self.sources.get(device)
        if source is None:
            raise CommandError(f"no device {device!r} (devices: {', '.join(self.sources)})")
        encoder = self._encoders[device]
        spec = encoder.schema.names.get(message)
        if spec is None or spec.spec.direction is not Direction.COMMAND:
            commands = [
                name
                for name, compiled in encoder.schema.names.items()
                if compiled.spec.direction is Direction.COMMAND
            ]
            raise CommandError(f"{message!r} is not a command of {device} (commands: {commands})")
        sequence = None
        if encoder.schema.profile.field(HeaderRole.SEQUENCE) is not None:
            sequence = self._command_sequence.get(device, 0)
            self._command_sequence[device] = (sequence + 1) % 256
        try:
            frame = encoder.encode(message, fields, sequence=sequence)
        except EncodeError as exc:
            raise CommandError(str(exc)) from exc
        try:
            async with asyncio.timeout(COMMAND_WRITE_SECONDS):
                await source.write(frame)
        except TimeoutError:
            raise CommandError(
                f"{device} did not take the command within {COMMAND_WRITE_SECONDS:g} s"
            ) from None
        logger.info("command %s sent to %s", message, device)

    # What clients see.

    def hello(self) -> dict[str, Any]:
        """The greeting a WebSocket client gets: version, devices, their messages and fields."""
        statuses = self.journal.statuses()
        devices = []
        catalogs: dict[str, list[dict[str, Any]]] = {}
        for device, source in self.sources.items():
            schema = source.schema
            devices.append(
                {
                    "device": device,
                    "online": device in statuses and statuses[device].online,
                    "profile": schema.profile.name,
                    "catalog": schema.catalog.name,
                }
            )
            catalogs.setdefault(
                schema.catalog.name,
                [
                    {
                        "message": message.name,
                        "cmd": message.cmd,
                        "direction": message.direction.value,
                        "fields": [
                            {
                                key: value
                                for key, value in (
                                    ("name", field.name),
                                    ("type", field.type.value),
                                    ("unit", field.unit),
                                    ("count", field.count),
                                )
                                if value is not None
                            }
                            for field in message.fields
                        ],
                    }
                    for message in schema.catalog.messages
                ],
            )
        return {"type": "hello", "version": __version__, "devices": devices, "catalogs": catalogs}

    def health(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``/healthz``: 200 while running, with each part's state."""
        running = self.started.is_set()
        body = {
            "status": "ok" if running else "starting",
            "version": __version__,
            "sources": [source.state() for source in self.sources.values()],
            "mqtt": self.mqtt.state() if self.mqtt is not None else {"enabled": False},
            "websocket": self.websocket.health() if self.websocket else {"enabled": False},
        }
        return (200 if running else 503), body

    # Running.

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down gracefully.

        Shutdown: stop reading the devices, say goodbye on MQTT (device and gateway
        status offline, what is queued flushed within a few seconds), close WebSocket
        clients with 1001 "going away".
        """
        async with asyncio.TaskGroup() as tasks:
            if self.websocket is not None:
                await self.websocket.start()
            if self.http_server is not None:
                await self.http_server.start()
            captures = [source.capture for source in self.sources.values() if source.capture]
            for capture in captures:
                capture.start()
            readers = [
                tasks.create_task(source.run(), name=f"source {device}")
                for device, source in self.sources.items()
            ]
            publisher = (
                tasks.create_task(self.mqtt.run(), name="mqtt") if self.mqtt is not None else None
            )
            self.started.set()
            websocket, mqtt = self.config.websocket, self.config.mqtt
            logger.info(
                "gateway running: %d source(s), websocket %s, mqtt %s",
                len(self.sources),
                f"on {websocket.host}:{websocket.port}" if self.websocket else "off",
                f"to {mqtt.host}:{mqtt.port}" if self.mqtt else "off",
            )
            await stop.wait()
            logger.info("shutting down")
            for reader in readers:  # each reports its device offline as it stops
                reader.cancel()
            await asyncio.wait(readers)
            for capture in captures:
                await capture.close()
            if self.mqtt is not None:
                await self.mqtt.close(timeout=SHUTDOWN_FLUSH_SECONDS)
            deadline = asyncio.get_running_loop().time() + SHUTDOWN_FLUSH_SECONDS
            if self.websocket is not None:
                await self.websocket.close(deadline)
            if self.http_server is not None:
                await self.http_server.close(deadline)
            if publisher is not None:
                publisher.cancel()
        logger.info("gateway stopped")


def _make_source(
    config: SourceConfig,
    schema: Schema,
    metrics: GatewayMetrics,
    sink: Gateway,
) -> Source:
    if isinstance(config, ReplaySourceConfig):
        return ReplaySource(config, schema, metrics, sink)
    return make_source(config, schema, metrics, sink)
