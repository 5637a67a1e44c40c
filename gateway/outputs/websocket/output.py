"""The WebSocket output: what the gateway sees of the WebSocket server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.outputs.websocket.hub import Hub
from gateway.outputs.websocket.server import WebSocketServer
from gateway.runtime.http import shares_websocket_port
from gateway.runtime.journal import Journal, Published
from gateway.runtime.output import Output, OutputContext
from gateway.runtime.status import DeviceStatus

__all__ = ["WebSocketOutput", "build"]


class WebSocketOutput:
    """Fans messages and device statuses out to WebSocket clients (an
    :class:`~gateway.runtime.output.Output`); resuming clients read the journal."""

    name = "websocket"

    def __init__(self, server: WebSocketServer, hub: Hub, journal: Journal) -> None:
        self.server = server
        self.hub = hub
        self._journal = journal
        self._closed = asyncio.Event()

    async def start(self) -> None:
        """Listen; raise :class:`~gateway.runtime.http.ListenError` if the port is taken."""
        await self.server.start()

    async def run(self) -> None:
        """Nothing to do but serve: return once closed."""
        await self._closed.wait()

    def deliver(self, message: Published) -> None:
        self.hub.publish(message)

    def device_status(self, status: DeviceStatus) -> None:
        self.hub.publish_status(status)

    async def wait_for_room(self) -> None:
        """At once: a client that cannot keep up loses messages, it never holds the gateway."""

    async def close(self, deadline: float) -> None:
        """Close every client with 1001 (going away), cutting off at ``deadline`` those
        that do not close their end."""
        try:
            await self.server.close(deadline)
        finally:
            self._closed.set()

    def problems(self) -> Sequence[str]:
        """None: a server that listens is ready (slow clients are theirs to fix)."""
        return ()

    def health(self) -> Mapping[str, Any]:
        """Clients connected, the last sequence number, messages buffered for clients that
        are behind and dropped for clients too slow."""
        hub = self.hub.statistics()
        return {
            "clients": self.server.clients,
            "last_seq": self._journal.last_seq,
            "buffered": hub.buffered,
            "dropped": hub.dropped,
        }


def build(context: OutputContext) -> Output | None:
    """The WebSocket output of ``context.config``, or None when ``[websocket]`` is off.

    It answers ``/healthz`` and ``/metrics`` too when ``[http]`` shares its port.
    """
    config = context.config
    if not config.websocket.enabled:
        return None
    hub = Hub(metrics=context.metrics)
    server = WebSocketServer(
        config.websocket,
        hub=hub,
        journal=context.journal,
        metrics=context.metrics,
        hello=context.hello,
        http=context.http if shares_websocket_port(config) else None,
        commands=context.commands,
    )
    return WebSocketOutput(server, hub, context.journal)
