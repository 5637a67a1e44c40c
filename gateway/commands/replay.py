"""``tgw replay CAPTURE...``: captures and dumps through the whole pipeline, as live sources."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
from pathlib import Path
from typing import Any

from gateway.commands.options import (
    add_mqtt_option,
    add_port_option,
    check_schema_options,
    schema_for,
)
from gateway.commands.progress import progress
from gateway.commands.serving import serve
from gateway.config import (
    GatewayConfig,
    LoggingConfig,
    MqttConfig,
    ReplaySourceConfig,
    WebSocketConfig,
    load_config,
)
from gateway.dumps import DumpFormat, InputError, open_dump
from gateway.logs import configure_logging
from gateway.outputs.registry import OUTPUTS
from gateway.runtime.gateway import Gateway
from gateway.runtime.replay import ReplaySource
from protocol.arguments import add_schema_options
from protocol.capture import EXTENSION
from protocol.config import DEFAULT_CATALOG, DEFAULT_PROFILE
from protocol.errors import GatewayError

__all__ = ["add_replay_command"]

logger = logging.getLogger("gateway")

PROGRESS_SECONDS = 0.2


class ReplayUsageError(GatewayError):
    """The replay's arguments are wrong."""


def add_replay_command(commands: Any) -> None:
    """Register ``replay``."""
    parser = commands.add_parser(
        "replay",
        help="play captures and dumps through the gateway as if the devices sent them",
        description="Feed captures (and raw or hex dumps) through the whole gateway: hub, "
        "WebSocket, MQTT, metrics, as one source per device, then stop. The files of one "
        "device (a capture's rotated parts) play one after the other, in order; several "
        "devices play side by side. A capture names its device, profile and catalog; a "
        "raw or hex dump plays as a device named after the file, with --profile and "
        "--catalog (or the defaults). Outputs: those of -c FILE, else WebSocket on "
        "127.0.0.1:--port and MQTT only with --mqtt.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="CAPTURE",
        help=f"a capture, a raw or hex dump, or a folder of captures (*{EXTENSION})",
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="N",
        help="play N times faster than captured (default: 1, the captured pace)",
    )
    pace.add_argument(
        "--fast",
        action="store_true",
        help="as fast as the outputs take it (waits for MQTT rather than overflow its queue)",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="a gateway TOML file whose outputs (websocket, http, mqtt, file) and logging "
        "to use (its sources, capture, state_dir and [mqtt] outbox are not: a replay keeps "
        "nothing on disk)",
    )
    add_port_option(parser, default=None, what="default: the config's, else 8765")
    add_mqtt_option(
        parser,
        default=None,
        help_text="publish to this MQTT broker; default: the config's [mqtt], else no MQTT",
    )
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the replay, keep serving WebSocket clients (history and /metrics) until Ctrl-C",
    )
    add_schema_options(parser, from_capture=True)
    parser.set_defaults(run=run_replay)


def run_replay(arguments: argparse.Namespace) -> int:
    """``tgw replay``: check every file, build the sources, run until they are done."""
    if arguments.speed <= 0:
        raise ReplayUsageError(f"--speed: expected a number above 0, got {arguments.speed:g}")
    check_schema_options(arguments)
    config = _outputs(arguments)
    configure_logging(config.logging)
    if config.sources:
        logger.info(
            "replay: the %d source(s) of %s are not read", len(config.sources), arguments.config
        )
    logger.info("replay: nothing is kept on disk (no state directory, MQTT's outbox in memory)")
    speed = None if arguments.fast else arguments.speed
    sources = _sources(arguments, speed)
    config = config.model_copy(update={"sources": tuple(sources)})
    gateway = Gateway(config, OUTPUTS)
    asyncio.run(_replay(gateway, keep_serving=arguments.keep_serving))
    return 0


def _outputs(arguments: argparse.Namespace) -> GatewayConfig:
    if arguments.config is not None:
        config = load_config(arguments.config)
    else:
        config = GatewayConfig(
            websocket=WebSocketConfig(host="127.0.0.1"),
            mqtt=MqttConfig(enabled=False),
            logging=LoggingConfig(),
        )
    updates: dict[str, Any] = {}
    if arguments.port is not None:
        updates["websocket"] = config.websocket.model_copy(update={"port": arguments.port})
    if arguments.mqtt is not None:
        host, port = arguments.mqtt
        updates["mqtt"] = config.mqtt.model_copy(
            update={"enabled": True, "host": host, "port": port}
        )
    # The capture's own settings are not wanted for a replay.
    updates["capture"] = config.capture.model_copy(update={"directory": None, "devices": ()})
    # Nor its state: a replay numbers from 1, keeps nothing, and leaves the live
    # gateway's files (its seq, history and outbox) alone rather than take them.
    updates["state_dir"] = None
    updates["mqtt"] = updates.get("mqtt", config.mqtt).model_copy(update={"outbox": None})
    return config.model_copy(update=updates)


def _files(paths: list[str]) -> list[str]:
    files: list[str] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(str(item) for item in path.glob(f"*{EXTENSION}"))
            if not found:
                raise InputError(f"{name}: a folder with no captures (*{EXTENSION}) in it")
            files.extend(found)
        else:
            files.append(name)
    return files


def _sources(arguments: argparse.Namespace, speed: float | None) -> list[ReplaySourceConfig]:
    """One source per device, its files in the order they were captured.

    Every file is opened and its schema loaded here, so that a bad one stops the
    replay before it starts, with a one-line message.
    """
    devices: dict[str, list[tuple[tuple[float, int, int], str]]] = {}
    schemas: dict[str, tuple[str, str]] = {}
    for index, name in enumerate(_files(arguments.paths)):
        if name == "-":
            raise ReplayUsageError("replay reads files, not stdin")
        with open_dump(name, DumpFormat.AUTO) as dump:
            schema_for(dump, arguments.profile, arguments.catalog)  # it loads, or says why
            header = dump.header
        if header is not None:
            device, order = header.source, (header.created, header.part, index)
            chosen = (arguments.profile or header.profile, arguments.catalog or header.catalog)
        else:
            device, order = _device_name(name), (0.0, 0, index)
            chosen = (arguments.profile or DEFAULT_PROFILE, arguments.catalog or DEFAULT_CATALOG)
        if schemas.setdefault(device, chosen) != chosen:
            raise InputError(
                f"{name}: device {device} is decoded with profile {chosen[0]!r} and catalog "
                f"{chosen[1]!r} here, but with {schemas[device]} in another file"
            )
        devices.setdefault(device, []).append((order, name))
    return [
        ReplaySourceConfig(
            device=device,
            profile=schemas[device][0],
            catalog=schemas[device][1],
            paths=tuple(name for _, name in sorted(files)),
            speed=speed,
        )
        for device, files in devices.items()
    ]


def _device_name(path: str) -> str:
    """A device name from a dump's file name: its stem, with odd characters as ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", Path(path).stem) or "replay"


async def _replay(gateway: Gateway, *, keep_serving: bool) -> None:
    replays = [source for source in gateway.sources.values() if isinstance(source, ReplaySource)]
    total_bytes = sum(
        Path(path).stat().st_size for source in replays for path in source.config.paths
    )

    async def watch(stop: asyncio.Event) -> None:
        with progress("replaying", total_bytes) as bar:
            waiting = [asyncio.ensure_future(source.finished.wait()) for source in replays]
            try:
                while not all(source.finished.is_set() for source in replays):
                    await asyncio.wait(waiting, timeout=PROGRESS_SECONDS)
                    bar.update(
                        sum(source.consumed for source in replays),
                        sum(source.statistics().frames for source in replays),
                    )
            finally:
                for task in waiting:
                    task.cancel()
        logger.info("replay done: %d source(s)", len(replays))
        if keep_serving:
            logger.info("still serving WebSocket clients; Ctrl-C stops")
        else:
            stop.set()

    stop = asyncio.Event()
    with contextlib.suppress(asyncio.CancelledError):
        await serve(gateway, ("replay watch", watch(stop)), stop=stop)
