"""``tgw run -c FILE`` and ``tgw demo``: the gateway in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from fwsim.device import SimulatedDevice
from fwsim.links import PtyLink
from fwsim.simulator import RunOptions, Simulator
from fwsim.truth import TruthWriter
from gateway.config import (
    GatewayConfig,
    LoggingConfig,
    MqttConfig,
    SerialSourceConfig,
    WebSocketConfig,
    load_config,
)
from gateway.logs import configure_logging
from gateway.outputs.registry import OUTPUTS
from gateway.runtime.gateway import Gateway
from protocol.errors import GatewayError
from protocol.schema import load_schema

__all__ = ["add_demo_command", "add_run_command", "serve"]

logger = logging.getLogger("gateway")

DEMO_DEVICE = "demo-node"


def add_run_command(commands: Any) -> None:
    """Register ``run``."""
    parser = commands.add_parser(
        "run",
        help="run the gateway from a configuration file",
        description="Read the devices of the configuration file, relay their decoded "
        "messages to WebSocket subscribers and MQTT, until SIGINT or SIGTERM. See the "
        "commented examples in configs/gateway/.",
    )
    parser.add_argument("-c", "--config", required=True, type=Path, help="gateway TOML file")
    parser.add_argument(
        "--capture",
        metavar="DIR",
        help="record every byte the sources read into capture files in DIR (all devices, "
        "unless the config's [capture] devices says which); overrides [capture] directory",
    )
    parser.set_defaults(run=run_gateway)


def add_demo_command(commands: Any) -> None:
    """Register ``demo``."""
    parser = commands.add_parser(
        "demo",
        help="a simulated device and a gateway reading it, nothing else needed",
        description="Start the device simulator on a PTY in this process and a gateway "
        "reading it: WebSocket, /healthz and /metrics on 127.0.0.1:8765, MQTT to "
        "localhost:1883 when a broker answers there (and without MQTT, saying so, when "
        "none does). Stop with Ctrl-C.",
    )
    parser.add_argument(
        "--port", type=int, default=8765, help="WebSocket and HTTP port (default: %(default)s)"
    )
    parser.add_argument(
        "--mqtt",
        default="localhost:1883",
        metavar="HOST:PORT",
        help="the MQTT broker to try (default: %(default)s)",
    )
    parser.set_defaults(run=run_demo)


async def serve(
    gateway: Gateway,
    *extra: tuple[str, Coroutine[Any, Any, object]],
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``gateway`` until SIGINT, SIGTERM or ``stop``, with ``extra`` (name, coroutine)
    tasks that live as long as it does."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with asyncio.TaskGroup() as tasks:
        companions = [tasks.create_task(coroutine, name=name) for name, coroutine in extra]
        await gateway.run(stop)
        for companion in companions:  # they live as long as the gateway
            companion.cancel()


def run_gateway(arguments: argparse.Namespace) -> int:
    """``tgw run``: load, validate, run."""
    config = load_config(arguments.config)
    config.require_sources()
    if arguments.capture is not None:
        capture = config.capture.model_copy(update={"directory": arguments.capture})
        config = config.model_copy(update={"capture": capture})
    configure_logging(config.logging)
    asyncio.run(serve(Gateway(config, OUTPUTS)))
    return 0


class DemoUsageError(GatewayError):
    """The demo's options are wrong."""


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def run_demo(arguments: argparse.Namespace) -> int:
    """``tgw demo``: fwsim on a PTY and a gateway reading it."""
    configure_logging(LoggingConfig())
    with tempfile.TemporaryDirectory(prefix="tgw-demo-") as folder:
        link = Path(folder) / "ttyDEMO"
        host, _, port = arguments.mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise DemoUsageError(f"--mqtt: expected HOST:PORT, got {arguments.mqtt!r}")
        mqtt_on = _broker_answers(host, int(port))
        if mqtt_on:
            logger.info("MQTT broker found on %s:%s", host, port)
        else:
            logger.warning("no MQTT broker answers on %s:%s: running without MQTT", host, port)
        config = GatewayConfig(
            sources=(SerialSourceConfig(device=DEMO_DEVICE, path=str(link)),),
            websocket=WebSocketConfig(host="127.0.0.1", port=arguments.port),
            mqtt=MqttConfig(enabled=mqtt_on, host=host, port=int(port), client_id="tgw-demo"),
        )
        asyncio.run(_demo(config, link))
    return 0


async def _demo(config: GatewayConfig, link: Path) -> None:
    schema = load_schema()
    simulator = Simulator(
        schema,
        [SimulatedDevice(schema, seed=1)],
        lambda on_data: PtyLink(link_path=link, on_data=on_data),
        RunOptions(realtime=True),
        TruthWriter(None),
        announce=lambda where: logger.info("simulated device on %s", where),
    )
    await serve(Gateway(config, OUTPUTS), ("simulator", simulator.run()))
