"""``tgw run -c FILE`` and ``tgw demo``: the gateway in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import pwd
import re
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
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
from protocol.errors import ConfigError
from protocol.schema import load_schema

__all__ = ["StateDir", "add_demo_command", "add_run_command", "choose_state_dir"]

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
    state = parser.add_mutually_exclusive_group()
    state.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep in DIR what survives a restart: the sequence number and the history "
        "clients resume from (journal.sqlite) and, with MQTT on, its outbox "
        "(mqtt-outbox.sqlite). Default: the config's state_dir, else $STATE_DIRECTORY "
        "(systemd's StateDirectory=), else $XDG_STATE_HOME/tgw/NAME (~/.local/state/tgw/NAME), "
        "NAME being the config file's name without .toml; the log says which. Two gateways "
        "need two directories",
    )
    state.add_argument(
        "--no-state",
        action="store_true",
        help="keep nothing on disk: after a restart seq starts again at 1, the history is "
        "empty and MQTT's outbox (in memory, unless [mqtt] outbox names a file) is lost",
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
    state = choose_state_dir(
        config,
        arguments.config,
        option=arguments.state_dir,
        keep=not arguments.no_state,
        environ=os.environ,
    )
    config = config.model_copy(
        update={"state_dir": None if state.path is None else str(state.path)}
    )
    configure_logging(config.logging)
    gateway = Gateway(config, OUTPUTS)  # a mistake in the config stops it here, in one line
    if state.path is None:
        logger.warning(
            "--no-state: nothing is kept on disk: a restart starts seq again at 1 and loses "
            "the history and MQTT's outbox (unless [mqtt] outbox names a file)"
        )
    else:
        logger.info("state kept in %s (%s)", state.path, state.origin)
    # What exists now (modules, schemas, the configuration) lives as long as the process:
    # the garbage collector's full passes then skip it (14-20 ms each before, < 1 ms after,
    # measured; such a pass stalls the event loop).
    gc.freeze()
    asyncio.run(serve(gateway))
    return 0


@dataclass(frozen=True)
class StateDir:
    """Where ``tgw run`` keeps what survives a restart (None: nowhere), and why there."""

    path: Path | None
    origin: str


def choose_state_dir(
    config: GatewayConfig,
    config_path: Path,
    *,
    option: str | None,
    keep: bool,
    environ: Mapping[str, str],
) -> StateDir:
    """``--state-dir``, else the config's ``state_dir``, else ``$STATE_DIRECTORY`` (its
    first path), else ``$XDG_STATE_HOME/tgw/<config file's stem>``; nowhere unless
    ``keep``. Raise ConfigError when there is no home to put the default in."""
    if not keep:
        return StateDir(None, "--no-state")
    if option is not None:
        return StateDir(Path(option), "--state-dir")
    if config.state_dir is not None:
        return StateDir(Path(config.state_dir), f"state_dir in {config_path}")
    systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return StateDir(Path(systemd), "$STATE_DIRECTORY")
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", config_path.stem) or "gateway"
    default = f"the default for {config_path}"
    xdg = environ.get("XDG_STATE_HOME", "")
    if Path(xdg).is_absolute():  # the specification: a relative path is to be ignored
        return StateDir(Path(xdg) / "tgw" / name, f"{default}, under $XDG_STATE_HOME")
    home = environ.get("HOME") or _home_of_user()
    if home is None or not Path(home).is_absolute():
        raise ConfigError(
            config_path,
            "state_dir",
            "no default state directory (no $HOME, no $XDG_STATE_HOME): "
            "pass --state-dir DIR, or --no-state",
        )
    return StateDir(Path(home) / ".local" / "state" / "tgw" / name, default)


def _home_of_user() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def run_demo(arguments: argparse.Namespace) -> int:
    """``tgw demo``: fwsim on a PTY and a gateway reading it, its state in a temporary
    directory (the demo shows the real path, disk outbox included, and leaves nothing)."""
    configure_logging(LoggingConfig())
    with tempfile.TemporaryDirectory(prefix="tgw-demo-") as folder:
        link = Path(folder) / "ttyDEMO"
        host, port = arguments.mqtt
        mqtt_on = _broker_answers(host, port)
        if mqtt_on:
            logger.info("MQTT broker found on %s:%s", host, port)
        else:
            logger.warning("no MQTT broker answers on %s:%s: running without MQTT", host, port)
        state = Path(folder) / "state"
        logger.info("state kept in %s (a temporary directory, removed at exit)", state)
        config = GatewayConfig(
            state_dir=str(state),
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
