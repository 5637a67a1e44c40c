"""The WebSocket output's metrics, made once per gateway by ``GatewayMetrics.group``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["WebSocketMetrics"]


class WebSocketMetrics:
    """Clients, messages sent and dropped, disconnects, bad requests."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.websocket_clients = Gauge(
            "tgw_websocket_clients", "Connected WebSocket clients", registry=registry
        )
        self.websocket_sent = Counter(
            "tgw_websocket_messages_sent",
            "Messages queued to WebSocket clients",
            registry=registry,
        )
        self.websocket_dropped = Counter(
            "tgw_websocket_messages_dropped",
            "Messages not delivered to a WebSocket client",
            ["reason"],
            registry=registry,
        )
        self.websocket_disconnects = Counter(
            "tgw_websocket_disconnects",
            "WebSocket clients closed by the gateway",
            ["reason"],
            registry=registry,
        )
        self.client_errors = Counter(
            "tgw_websocket_client_errors",
            "Bad requests from WebSocket clients",
            ["code"],
            registry=registry,
        )
