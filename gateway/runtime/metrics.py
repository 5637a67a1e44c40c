"""The gateway's metrics, in Prometheus form (served at ``/metrics``).

Each :class:`GatewayMetrics` has its own registry, so several gateways (in tests) do
not share counters. Every part of the runtime gets the instance and updates the
metrics named here; an output defines its own group with :meth:`GatewayMetrics.group`,
so that a gateway without MQTT exports no MQTT metric.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

Group = TypeVar("Group")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    """All counters and gauges of one gateway."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self._groups: dict[Callable[[CollectorRegistry], Any], Any] = {}
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
        self.commands = Counter(
            "tgw_commands", "Commands sent to devices", ["device", "result"], registry=registry
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

        self.state_file_errors = Counter(
            "tgw_state_file_errors",
            "Trouble with a state file: a commit the disk refused (kind=write), a file "
            "that could not be read and was moved aside (kind=unreadable)",
            ["file", "kind"],
            registry=registry,
        )

    def state_file_error(self, file: str, kind: str) -> None:
        """Count trouble with state file ``file`` (its name): ``write`` or ``unreadable``."""
        self.state_file_errors.labels(file, kind).inc()

    def group(self, kind: Callable[[CollectorRegistry], Group]) -> Group:
        """The metrics an output defines, made on this registry the first time it asks:
        ``kind(registry)``. Its metrics exist only while the output does."""
        group = self._groups.get(kind)
        if group is None:
            group = self._groups[kind] = kind(self.registry)
        return cast(Group, group)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
