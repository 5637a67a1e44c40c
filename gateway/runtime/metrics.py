"""The gateway's metrics, in Prometheus form (served at ``/metrics``).

Each :class:`GatewayMetrics` has its own registry, so several gateways (in tests) do
not share counters. Every part of the runtime gets the instance and updates the
metrics named here; an output defines its own on :attr:`GatewayMetrics.registry`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """All counters and gauges of one gateway."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.frames = Counter(
            "tgw_frames", "Frames decoded", ["device", "message"], registry=registry
        )
        self.decode_errors = Counter(
            "tgw_decode_errors", "Stream errors by kind", ["device", "kind"], registry=registry
        )
        self.bytes_read = Counter("tgw_bytes_read", "Bytes read", ["device"], registry=registry)
        self.bytes_skipped = Counter(
            "tgw_bytes_skipped",
            "Bytes skipped while hunting for frames",
            ["device"],
            registry=registry,
        )
        self.reconnects = Counter(
            "tgw_source_reconnects",
            "Connection attempts after a failure or loss",
            ["device"],
            registry=registry,
        )
        self.device_online = Gauge(
            "tgw_device_online",
            "1 while the device is connected and not silent",
            ["device"],
            registry=registry,
        )
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
        self.commands = Counter(
            "tgw_commands", "Commands sent to devices", ["device", "result"], registry=registry
        )
        self.mqtt_connected = Gauge(
            "tgw_mqtt_connected", "1 while connected to the MQTT broker", registry=registry
        )
        self.mqtt_queue_depth = Gauge(
            "tgw_mqtt_queue_depth", "Messages waiting for the MQTT broker", registry=registry
        )
        self.mqtt_published = Counter(
            "tgw_mqtt_published", "Messages published to MQTT", registry=registry
        )
        self.mqtt_publish_failures = Counter(
            "tgw_mqtt_publish_failures", "MQTT publishes that failed", registry=registry
        )
        self.mqtt_dropped = Counter(
            "tgw_mqtt_dropped",
            "Messages dropped before reaching MQTT",
            ["reason"],
            registry=registry,
        )
        self.mqtt_reconnects = Counter(
            "tgw_mqtt_reconnects",
            "MQTT connection attempts after a failure or loss",
            registry=registry,
        )

        self.capture_bytes = Counter(
            "tgw_capture_bytes", "Bytes written to capture files", ["device"], registry=registry
        )
        self.capture_lost_bytes = Counter(
            "tgw_capture_lost_bytes",
            "Bytes read but not captured",
            ["device", "reason"],
            registry=registry,
        )
        self.capture_suspended = Gauge(
            "tgw_capture_suspended",
            "1 while the disk refuses a device's capture",
            ["device"],
            registry=registry,
        )
        self.capture_errors = Counter(
            "tgw_capture_errors", "Capture writes that failed", ["device"], registry=registry
        )
        self.capture_files = Counter(
            "tgw_capture_files", "Capture files opened", ["device"], registry=registry
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
