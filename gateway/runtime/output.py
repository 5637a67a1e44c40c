"""What every output is to the gateway: one small interface, and what it is built from.

The gateway holds a list of outputs and knows none of them by name. It hands each one
every published message and every device status change, runs each one in its task
group, asks each one for room before a replay hurries on, shows each one's health, and
closes each one by a deadline at shutdown. An output is built from the gateway's
configuration by a factory; the command that runs the gateway passes the factories
(:data:`gateway.outputs.registry.OUTPUTS`), so the runtime imports no output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import GatewayConfig
from gateway.runtime.http import HttpEndpoints
from gateway.runtime.journal import Journal, Published
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.status import DeviceStatus
from protocol.schema import Schema

__all__ = ["CommandSink", "Output", "OutputContext", "OutputFactory"]


class CommandSink(Protocol):
    """Where commands from clients go: the gateway's devices, by name."""

    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        """Encode ``message`` with ``fields`` and write it to ``device``.

        Raise :class:`protocol.errors.GatewayError` (its str a one-line reason) when the
        device is unknown or offline or the command cannot be encoded.
        """


class Output(Protocol):
    """A place decoded messages go: WebSocket clients, an MQTT broker, a file.

    :meth:`deliver` and :meth:`device_status` are called from the event loop and never
    block: an output that cannot keep up buffers (bounded) or drops, and counts what it
    drops. The gateway calls :meth:`start` once before any delivery, runs :meth:`run` in
    its task group, and at shutdown awaits :meth:`close` and then cancels :meth:`run`.
    """

    name: str
    """What the output is called in logs and in ``/healthz`` (``websocket``, ``mqtt``)."""

    async def start(self) -> None:
        """Acquire what the output needs before the gateway runs (bind a port, open a file).

        Raise :class:`protocol.errors.GatewayError` with a one-line reason if it cannot.
        """

    async def run(self) -> None:
        """Do the output's own work (reconnect, flush) until cancelled or closed."""

    def deliver(self, message: Published) -> None:
        """Take one numbered, serialised message. Never blocks."""

    def device_status(self, status: DeviceStatus) -> None:
        """Take a change of a device's state. Never blocks."""

    async def wait_for_room(self) -> None:
        """Return once the output can take more (at once if it never pushes back).

        A replay played as fast as possible awaits this between chunks, so that it waits
        for a slow output rather than overflow it.
        """

    async def close(self, deadline: float) -> None:
        """Flush what can be flushed and say goodbye, returning by ``deadline``
        (event loop time) whatever the peers do."""

    def health(self) -> Mapping[str, Any]:
        """The output's state for ``/healthz``: connection, queue depth, counts, last error."""

    def problems(self) -> Sequence[str]:
        """Why the output is not ready, for ``/readyz``, one line each; empty when it is."""


@dataclass(frozen=True, slots=True)
class OutputContext:
    """What a factory may build an output from, besides the configuration."""

    config: GatewayConfig
    metrics: GatewayMetrics
    journal: Journal
    """Numbers and history: what a resuming client asks for."""
    http: HttpEndpoints
    """``/healthz`` and ``/metrics``, for a server that listens on the HTTP port."""
    schemas: Mapping[str, Schema]
    """Each device's schema, by device name."""
    hello: Callable[[], dict[str, Any]]
    """The greeting of a WebSocket client: version, devices, catalogs."""
    commands: CommandSink


OutputFactory = Callable[[OutputContext], Output | None]
"""Builds an output from the context, or returns None when its section turns it off."""
