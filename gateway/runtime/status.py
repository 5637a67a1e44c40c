"""A device's state changes, as the gateway reports them to its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DeviceStatus"]


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """``device`` went online or offline at ``time`` (Unix seconds), and why."""

    device: str
    online: bool
    reason: str
    time: float

    def record(self) -> dict[str, Any]:
        """The status as clients see it: ``{"type": "status", "device", "online", ...}``."""
        return {
            "type": "status",
            "device": self.device,
            "online": self.online,
            "reason": self.reason,
            "time": self.time,
        }
