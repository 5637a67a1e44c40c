"""The gateway's configuration file (TOML), validated at start.

Every problem is a :class:`protocol.errors.ConfigError` naming the file, the key path
and what was expected. The commented examples in ``configs/gateway/`` show every key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from protocol.config import is_file_reference, validate
from protocol.errors import ConfigError, os_error_reason
from protocol.model import ConfigDocument, InvalidKeyError, StrictModel, first_duplicate

__all__ = [
    "CaptureConfig",
    "FileConfig",
    "GatewayConfig",
    "HttpConfig",
    "LoggingConfig",
    "MqttConfig",
    "ReplaySourceConfig",
    "SerialSourceConfig",
    "SourceConfig",
    "TcpSourceConfig",
    "WebSocketConfig",
    "load_config",
]

Port = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0)]


class _Source(StrictModel):
    device: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    """The device's name: in topics, envelopes and metrics."""
    profile: str = "default"
    catalog: str = "default"
    silence_timeout: Seconds = 10.0
    """Seconds without a frame after which the device is reported offline."""
    include_raw: bool = False
    """Put the raw frame (hex) in every envelope."""
    reconnect_initial: Seconds = 0.5
    reconnect_max: Seconds = 30.0


class SerialSourceConfig(_Source):
    """A serial port: ``/dev/ttyUSB0``, ``/dev/serial/by-id/...`` or a PTY."""

    type: Literal["serial"] = "serial"
    path: str
    baud: Annotated[int, Field(gt=0)] = 115200
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    stop_bits: float = 1

    @field_validator("stop_bits")
    @classmethod
    def _stop_bits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError(f"expected 1, 1.5 or 2, got {value}")
        return value

    flow_control: Literal["none", "rtscts", "xonxoff"] = "none"

    @property
    def where(self) -> str:
        """Where the device is: the port's path."""
        return self.path


class TcpSourceConfig(_Source):
    """A serial port behind a TCP server (ser2net and the like)."""

    type: Literal["tcp"] = "tcp"
    host: str
    port: Port

    @property
    def where(self) -> str:
        """Where the device is: ``host:port`` (``[host]:port`` for an IPv6 address)."""
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


class ReplaySourceConfig(_Source):
    """Captures or dumps played back as if the device sent them (``tgw replay``).

    ``speed`` 1 keeps the captured pace, 10 plays ten times faster, None as fast as the
    outputs take it. Raw and hex dumps have no times: they always play as fast as that.
    """

    type: Literal["replay"] = "replay"
    paths: Annotated[tuple[str, ...], Field(min_length=1)]
    speed: Annotated[float, Field(gt=0)] | None = 1.0

    @property
    def where(self) -> str:
        """The dumps, as given."""
        paths = self.paths
        return paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"


SourceConfig = Annotated[
    SerialSourceConfig | TcpSourceConfig | ReplaySourceConfig, Field(discriminator="type")
]


class WebSocketConfig(StrictModel):
    """The WebSocket server; it also answers ``/healthz`` and ``/metrics`` when ``[http]``
    shares its port (the default)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8765
    queue_size: Annotated[int, Field(ge=1)] = 1000
    """Messages buffered per subscriber before its policy applies."""
    slow_policy: Literal["drop", "disconnect"] = "drop"
    """What happens to a subscriber whose buffer is full: lose messages (and be told), or
    be disconnected."""
    history: Annotated[int, Field(ge=0)] = 10000
    """Messages kept for subscribers that resume after a reconnect."""
    max_message_size: Annotated[int, Field(ge=64)] = 65536
    """Largest message a client may send, in bytes."""
    ping_interval: Seconds = 20.0
    ping_timeout: Seconds = 20.0
    compression: bool = False
    """permessage-deflate; off by default: it makes every delivery costlier."""
    read_tokens: tuple[str, ...] = ()
    """Tokens allowed to subscribe; empty with no command tokens: anyone may subscribe."""
    command_tokens: tuple[str, ...] = ()
    """Tokens allowed to subscribe and send commands; empty: nobody may send commands."""
    command_rate: Annotated[float, Field(gt=0)] = 5.0
    """Commands per second a client may send (token bucket), bursts of ``command_burst``."""
    command_burst: Annotated[int, Field(ge=1)] = 10


class HttpConfig(StrictModel):
    """``/healthz`` and ``/metrics``: on the WebSocket server's port when they share it
    (the default), else on a plain HTTP server of their own."""

    enabled: bool = True
    host: str | None = None
    """None: the WebSocket server's host."""
    port: Port | None = None
    """None: the WebSocket server's port."""


class MqttConfig(StrictModel):
    """The MQTT broker the gateway publishes to: off unless ``enabled`` is set."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 1883
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    """None: ``tgw-<host>-<pid>``, unique, so two gateways never knock each other off."""
    topic_prefix: Annotated[str, Field(pattern=r"^[^#+]+$")] = "tgw"
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    keepalive: Annotated[int, Field(ge=5)] = 30
    queue_size: Annotated[int, Field(ge=1)] = 100000
    """Messages held while the broker is unreachable; beyond this, the oldest are dropped."""
    outbox: str | None = None
    """A SQLite file where the messages held wait, surviving a restart; None: in the
    state directory if there is one (``mqtt-outbox.sqlite``), else in memory."""
    outbox_max_bytes: Annotated[int, Field(ge=4096)] = 256 * 1024 * 1024
    """Payload bytes the outbox holds at most; beyond this, the oldest are dropped."""
    commit_interval: Annotated[float, Field(gt=0, le=10)] = 0.05
    """Seconds between commits of the disk outbox: what a power cut can lose at most."""
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 100
    """Publishes sent and not yet acknowledged at most: the window that lets a backlog
    drain faster than one message per round trip to the broker."""
    readiness_outage: Seconds = 30.0
    """``/readyz`` answers 503 once the broker has been unreachable this many seconds."""
    readiness_queue: Annotated[int, Field(ge=1)] | None = None
    """``/readyz`` answers 503 while the outbox holds more messages than this; None: half
    of ``queue_size``."""
    reconnect_initial: Seconds = 0.5
    reconnect_max: Seconds = 30.0


class CaptureConfig(StrictModel):
    """Recording every byte the sources read into rotated capture files."""

    directory: str | None = None
    """Where capture files go; None: capture is off."""
    devices: tuple[str, ...] = ()
    """The devices to capture; empty: all of them."""
    max_file_size: Annotated[int, Field(ge=4096)] = 64 * 1024 * 1024
    """A file that would grow beyond this many bytes is closed, and the next part opened."""
    max_files: Annotated[int, Field(ge=1)] = 10
    """Files kept per device; the oldest is deleted when a new one would exceed this."""
    buffer_size: Annotated[int, Field(ge=4096)] = 8 * 1024 * 1024
    """Bytes waiting for a slow disk; what does not fit is not captured (counted, logged)."""
    retry_interval: Seconds = 10.0
    """Seconds between attempts to resume a capture the disk refused."""


class FileConfig(StrictModel):
    """Every envelope (and device status) as one line of JSON in a file, rotated by size."""

    path: str | None = None
    """The file; None: the file output is off. Rotated files are ``<path>.1`` (newest) on."""
    max_file_size: Annotated[int, Field(ge=4096)] = 64 * 1024 * 1024
    """A file that would grow beyond this many bytes is rotated, and a new one begun."""
    max_files: Annotated[int, Field(ge=0)] = 5
    """Rotated files kept beside the current one; the oldest beyond this is deleted."""
    buffer_size: Annotated[int, Field(ge=4096)] = 8 * 1024 * 1024
    """Bytes of lines waiting for a slow disk; what does not fit is dropped (counted, logged)."""
    statuses: bool = True
    """Write device status changes too (``"type": "status"`` lines)."""


class LoggingConfig(StrictModel):
    """Logs go to stderr."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


class GatewayConfig(ConfigDocument):
    """The whole gateway: sources in; WebSocket, MQTT and a file out."""

    shutdown_timeout: Seconds = 5.0
    """Seconds a shutdown may take, whatever the broker and the clients do."""
    state_dir: str | None = None
    """Where what survives a restart is kept: the sequence number and the history clients
    resume from (``journal.sqlite``), MQTT's outbox (``mqtt-outbox.sqlite``). None:
    ``tgw run`` chooses a default (:func:`gateway.commands.run.choose_state_dir`); a
    :class:`~gateway.runtime.gateway.Gateway` given None keeps nothing."""
    sources: tuple[SourceConfig, ...] = ()
    websocket: WebSocketConfig = WebSocketConfig()
    http: HttpConfig = HttpConfig()
    mqtt: MqttConfig = MqttConfig()
    file: FileConfig = FileConfig()
    capture: CaptureConfig = CaptureConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _unique_devices(self) -> GatewayConfig:
        names = [source.device for source in self.sources]
        duplicate = first_duplicate(list(names))
        if duplicate is not None:
            raise InvalidKeyError(
                ("sources", duplicate, "device"), f"each device once, {names[duplicate]!r} is taken"
            )
        for index, device in enumerate(self.capture.devices):
            if device not in names:
                raise InvalidKeyError(
                    ("capture", "devices", index),
                    f"no source has device {device!r} (devices: {', '.join(names) or 'none'})",
                )
        return self

    def require_sources(self) -> None:
        """Raise ConfigError unless the configuration has at least one source."""
        if not self.sources:
            raise ConfigError(
                self.source or "configuration",
                "sources",
                "no [[sources]]: the gateway needs at least one device to read "
                "(see configs/gateway/ for examples)",
            )

    def captures(self, device: str) -> bool:
        """Whether ``device``'s bytes are to be recorded."""
        capture = self.capture
        return capture.directory is not None and (not capture.devices or device in capture.devices)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a gateway configuration file; raise ConfigError naming the problem.

    Relative paths in it (profiles, catalogs, replayed dumps, the capture directory, the
    output file) are relative to the file's folder, not to the current directory.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read: {os_error_reason(exc)}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from exc
    return validate(GatewayConfig, _anchor_paths(data, Path(path).parent), str(path))


def _anchor_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with its relative file paths made relative to ``folder`` instead."""

    def anchored(value: object, *, reference: bool = False) -> object:
        if not isinstance(value, str) or Path(value).is_absolute():
            return value
        if reference and not is_file_reference(value):  # a shipped name
            return value
        return str(folder / value)

    sources = data.get("sources")
    if isinstance(sources, list):
        data["sources"] = [
            {
                key: anchored(value, reference=True)
                if key in ("profile", "catalog")
                else [anchored(path) for path in value]
                if key == "paths" and isinstance(value, list)
                else value
                for key, value in source.items()
            }
            if isinstance(source, dict)
            else source
            for source in sources
        ]
    if "state_dir" in data:
        data["state_dir"] = anchored(data["state_dir"])
    for section, key in (("capture", "directory"), ("file", "path"), ("mqtt", "outbox")):
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            table[key] = anchored(table[key])
    return data
