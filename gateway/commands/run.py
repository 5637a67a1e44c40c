"""``tgw run -c FILE`` and ``tgw demo``: the gateway in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

from fwsim.device import SimulatedDevice
from fwsim.links import PtyLink
from fwsim.simulator import RunOptions, Simulator
from fwsim.truth import TruthWriter
from gateway.commands.options import add_mqtt_option, add_port_option
from gateway.commands.serving import serve
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
from protocol.schema import load_schema

__all__ = ["add_demo_command", "add_run_command"]

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
    parser.add_argument(
        "-c",
        "--config",
        required=True,
        type=Path,
        metavar="FILE",
        help="the gateway's configuration (TOML): its sources, outputs and logging",
    )
    parser.add_argument(
        "--capture",
        metavar="DIR",
        help="record every byte the sources read into capture files in DIR (all devices, "
        "unless the config's [capture] devices says which); overrides [capture] directory",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep in DIR what survives a restart: the sequence number and the history "
        "clients resume from (journal.sqlite) and, with MQTT on, its outbox "
        "(mqtt-outbox.sqlite); overrides the config's state_dir",
    )
    parser.set_defaults(run=run_gateway)


def add_demo_command(commands: Any) -> None:
    """Register ``demo``."""
    parser = commands.add_parser(
        "demo",
        help="a simulated device and a gateway reading it, nothing else needed",
        description="Start the device simulator on a PTY in this process and a gateway "
        "reading it: WebSocket, /healthz and /metrics on 127.0.0.1 (--port), MQTT to "
        "--mqtt when a broker answers there (and without MQTT, saying so, when none does). "
        "Stop with Ctrl-C.",
    )
    add_port_option(parser, default=8765, what="default: %(default)s")
    add_mqtt_option(
        parser,
        default="localhost:1883",
        help_text="the MQTT broker to try; without one answering there, the demo runs without "
        "MQTT; default: %(default)s",
    )
    parser.set_defaults(run=run_demo)


def run_gateway(arguments: argparse.Namespace) -> int:
    """``tgw run``: load, validate, run."""
    config = load_config(arguments.config)
    config.require_sources()
    if arguments.capture is not None:
        capture = config.capture.model_copy(update={"directory": arguments.capture})
        config = config.model_copy(update={"capture": capture})
    if arguments.state_dir is not None:
        config = config.model_copy(update={"state_dir": arguments.state_dir})
    configure_logging(config.logging)
    asyncio.run(serve(Gateway(config, OUTPUTS)))
    return 0


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
        host, port = arguments.mqtt
        mqtt_on = _broker_answers(host, port)
        if mqtt_on:
            logger.info("MQTT broker found on %s:%s", host, port)
        else:
            logger.warning("no MQTT broker answers on %s:%s: running without MQTT", host, port)
        config = GatewayConfig(
            sources=(SerialSourceConfig(device=DEMO_DEVICE, path=str(link)),),
            websocket=WebSocketConfig(host="127.0.0.1", port=arguments.port),
            mqtt=MqttConfig(enabled=mqtt_on, host=host, port=port, client_id="tgw-demo"),
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
