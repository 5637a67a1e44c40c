"""The gateway: sources in, outputs out, in one TaskGroup.

:class:`Gateway` builds the sources and the outputs from a validated configuration and
is the single place a decoded frame goes on: it is the sources' sink (frames and device
statuses), which it numbers in the :class:`~gateway.runtime.journal.Journal` and hands to
every output; the command sink of the outputs that take commands; and the provider of
the greeting and of ``/healthz``. It knows no output by name.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig, ReplaySourceConfig, SourceConfig
from gateway.runtime.capture import CaptureWriter
from gateway.runtime.envelope import Envelope
from gateway.runtime.http import HttpEndpoints, standalone_http_server
from gateway.runtime.journal import Journal
from gateway.runtime.journal_store import JournalStore
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import Output, OutputContext, OutputFactory
from gateway.runtime.replay import ReplaySource
from gateway.runtime.sources import Source, make_source
from gateway.runtime.status import DeviceStatus
from protocol.capture import CaptureHeader
from protocol.catalog import Direction
from protocol.config import load_catalog, load_profile
from protocol.encoder import FrameEncoder
from protocol.errors import ConfigError, EncodeError, GatewayError
from protocol.profile import HeaderRole
from protocol.schema import Schema, compile_schema
from protocol.version import __version__

__all__ = ["CommandError", "Gateway"]

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.sqlite"
"""The journal's file in the state directory."""
COMMAND_WRITE_SECONDS = 5.0
"""How long a command may wait for the device's link (a stuck flow control) before failing."""


class CommandError(GatewayError):
    """A command cannot be sent: unknown device or message, bad fields, device away."""


class Gateway:
    """One gateway. Build it from a validated config and the output factories to try
    (:data:`gateway.outputs.registry.OUTPUTS`), then ``await run(stop)``.

    Raise :class:`~protocol.errors.ConfigError` naming the configuration file and key
    when a source's profile or catalog cannot be loaded, or an output refuses the
    configuration.
    """

    def __init__(self, config: GatewayConfig, outputs: Sequence[OutputFactory]) -> None:
        self.config = config
        self.metrics = GatewayMetrics()
        self.schemas = _load_schemas(config)  # before the journal's file is taken
        store = None
        if config.state_dir is not None:
            store = JournalStore(
                Path(config.state_dir) / JOURNAL_FILE,
                history=config.websocket.history,
                source=config.source,
                errors=self.metrics.state_file_error,
            )
        self.journal = Journal(history=config.websocket.history, store=store)
        self.sources: dict[str, Source] = {}
        self._encoders: dict[str, FrameEncoder] = {}
        self._command_sequence: dict[str, int] = {}
        for source_config in config.sources:
            schema = self.schemas[source_config.device]
            self.sources[source_config.device] = self._make_source(source_config, schema)
            self._encoders[source_config.device] = FrameEncoder(schema)
        self.instance = uuid.uuid4().hex
        """This run's identity: a restarted gateway has a new one (in ``hello`` and health)."""
        self.started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.http = HttpEndpoints(
            health=self.health, readiness=self.readiness, metrics=self.metrics
        )
        context = OutputContext(
            config=config,
            metrics=self.metrics,
            journal=self.journal,
            http=self.http,
            schemas=self.schemas,
            hello=self.hello,
            commands=self,
        )
        try:
            self.outputs: list[Output] = [
                output for factory in outputs if (output := factory(context)) is not None
            ]
        except BaseException:
            self.journal.close()  # an output refused the configuration: let go of the file
            raise
        self._http_server = standalone_http_server(config, self.http)
        self.started = asyncio.Event()
        self._stopping = False

    def _make_source(self, config: SourceConfig, schema: Schema) -> Source:
        if isinstance(config, ReplaySourceConfig):
            return ReplaySource(config, schema, self.metrics, self, room=self.wait_for_room)
        capture = None
        if self.config.captures(config.device):
            capture = CaptureWriter(
                self.config.capture,
                CaptureHeader(
                    source=config.device,
                    profile=config.profile,
                    catalog=config.catalog,
                    kind=config.type,
                    where=config.where,
                ),
                self.metrics,
            )
        return make_source(config, schema, self.metrics, self, capture=capture)

    # The sources' sink.

    def frame(self, envelope: Envelope) -> None:
        """A decoded frame: number it and hand it to every output."""
        published = self.journal.append(envelope)
        for output in self.outputs:
            output.deliver(published)

    def status(self, status: DeviceStatus) -> None:
        """A device came online or went offline: keep it and tell every output."""
        self.journal.record_status(status)
        for output in self.outputs:
            output.device_status(status)

    async def wait_for_room(self) -> None:
        """Return once every output can take more (a replay played as fast as possible)."""
        for output in self.outputs:
            await output.wait_for_room()
        await asyncio.sleep(0)  # let the outputs and clients run

    # The WebSocket server's command sink.

    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        """Encode ``message`` for ``device`` and write it; raise CommandError saying why not.

        Counted in ``tgw_commands{device, result}``; a failure for a device that is not a
        source counts under ``device="unknown"``, so clients cannot make up labels.
        """
        label = device if device in self.sources else "unknown"
        try:
            await self._send_command(device, message, fields)
        except GatewayError:
            self.metrics.commands.labels(device=label, result="failed").inc()
            raise
        self.metrics.commands.labels(device=device, result="sent").inc()

    async def _send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
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
        sequence_field = encoder.schema.profile.field(HeaderRole.SEQUENCE)
        if sequence_field is not None:
            sequence = self._command_sequence.get(device, 0)
            self._command_sequence[device] = (sequence + 1) % (1 << (8 * sequence_field.width))
        try:
            frame = encoder.encode(
                message, fields, header=None if sequence is None else {"sequence": sequence}
            )
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
        """The greeting a client gets: version, devices, their messages and fields."""
        statuses = self.journal.statuses()
        devices = []
        catalogs: dict[str, list[dict[str, Any]]] = {}
        for device, schema in self.schemas.items():
            status = statuses.get(device)
            devices.append(
                {
                    "device": device,
                    "online": status is not None and status.online,
                    "profile": schema.profile.name,
                    "catalog": schema.catalog.name,
                }
            )
            catalogs.setdefault(schema.catalog.name, _catalog_record(schema))
        return {
            "type": "hello",
            "version": __version__,
            "instance": self.instance,
            "started": self.started_at,
            "devices": devices,
            "catalogs": catalogs,
        }

    def health(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``/healthz``: 200 while running, with each part's state."""
        running = self.started.is_set() and not self._stopping
        state = "stopping" if self._stopping else "ok" if running else "starting"
        body: dict[str, Any] = {
            "status": state,
            "version": __version__,
            "instance": self.instance,
            "started": self.started_at,
            "last_seq": self.journal.last_seq,
            "sources": [source.state() for source in self.sources.values()],
            "outputs": {output.name: dict(output.health()) for output in self.outputs},
        }
        return (200 if running else 503), body

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``/readyz``: 503 with the reasons while the gateway is
        starting or stopping, no device is online, or an output has a problem (the broker
        away too long, an outbox too full or that cannot write); else 200."""
        reasons: list[str] = []
        if not self.started.is_set() or self._stopping:
            reasons.append("stopping" if self._stopping else "starting")
        if not any(status.online for status in self.journal.statuses().values()):
            reasons.append("no device is online")
        for output in self.outputs:
            reasons.extend(output.problems())
        body = {"status": "not ready" if reasons else "ready", "reasons": reasons}
        return (503 if reasons else 200), body

    # Running.

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down within ``shutdown_timeout`` seconds.

        Shutdown: stop reading the devices (each is reported offline), then the captures,
        every output and the HTTP server close by the same deadline (MQTT says goodbye and
        flushes, WebSocket clients get 1001 "going away", files are flushed), whatever the
        disk, the broker and the clients do. A source that fails (a damaged capture in a
        replay) shuts the gateway down the same way, and its error then propagates.
        """
        await self._start()
        captures = [source.capture for source in self.sources.values() if source.capture]
        for capture in captures:
            capture.start()
        async with asyncio.TaskGroup() as tasks:
            runners = [
                tasks.create_task(output.run(), name=f"output {output.name}")
                for output in self.outputs
            ]
            self.started.set()
            if not self.outputs:
                logger.warning(
                    "no output is on: decoded messages go nowhere but /metrics "
                    "(see [websocket], [mqtt] and [file] in configs/gateway/serial.toml)"
                )
            logger.info(
                "gateway running: %d source(s); outputs: %s",
                len(self.sources),
                ", ".join(output.name for output in self.outputs) or "none",
            )
            try:
                await self._read_until(stop)
            finally:
                await self._close(captures)
                for runner in runners:
                    runner.cancel()
        logger.info("gateway stopped")

    async def _start(self) -> None:
        """Start every output and the HTTP server; if one cannot start, close those that did
        (its error, a port taken or a file that cannot be opened, then propagates)."""
        started: list[Output] = []
        try:
            for output in self.outputs:
                await output.start()
                started.append(output)
            if self._http_server is not None:
                await self._http_server.start()
        except BaseException:
            deadline = asyncio.get_running_loop().time() + self.config.shutdown_timeout
            await asyncio.gather(*(output.close(deadline) for output in started))
            await asyncio.to_thread(self.journal.close)  # a clean stop: number on next time
            raise

    async def _read_until(self, stop: asyncio.Event) -> None:
        """Run the sources until ``stop`` is set; raise what a failing source raised."""
        async with asyncio.TaskGroup() as reading:
            readers = [
                reading.create_task(source.run(), name=f"source {device}")
                for device, source in self.sources.items()
            ]
            await stop.wait()
            self._stopping = True
            logger.info("shutting down (within %g s)", self.config.shutdown_timeout)
            for reader in readers:  # each reports its device offline as it stops
                reader.cancel()

    async def _close(self, captures: list[CaptureWriter]) -> None:
        """Close the captures, the outputs and the HTTP server by one deadline."""
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + self.config.shutdown_timeout
        await asyncio.gather(
            *(capture.close(deadline) for capture in captures),
            *(output.close(deadline) for output in self.outputs),
        )
        if self._http_server is not None:
            await self._http_server.close(deadline)
        await asyncio.to_thread(self.journal.close)


def _load_schemas(config: GatewayConfig) -> dict[str, Schema]:
    """Each source's schema, by device; a schema is compiled once however many use it.

    A profile or catalog that cannot be loaded is a ConfigError naming the configuration
    file and the source's key, then the profile's or catalog's own problem.
    """
    compiled: dict[tuple[str, str], Schema] = {}
    schemas: dict[str, Schema] = {}
    for index, source in enumerate(config.sources):
        key = (source.profile, source.catalog)
        if key not in compiled:
            try:
                profile = load_profile(source.profile)
            except ConfigError as exc:
                raise ConfigError(config.source, f"sources[{index}].profile", str(exc)) from exc
            try:
                catalog = load_catalog(source.catalog)
            except ConfigError as exc:
                raise ConfigError(config.source, f"sources[{index}].catalog", str(exc)) from exc
            compiled[key] = compile_schema(profile, catalog)
        schemas[source.device] = compiled[key]
    return schemas


def _catalog_record(schema: Schema) -> list[dict[str, Any]]:
    """A catalog's messages and fields, as the greeting shows them."""
    return [
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
    ]
