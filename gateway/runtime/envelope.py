"""The envelope: one shape for a decoded frame everywhere it goes (WebSocket, MQTT, logs).

A frame from a source becomes an :class:`Envelope` once, gets a gateway sequence
number from the hub, and is serialised to JSON once (:meth:`Envelope.to_json`); every
subscriber and the MQTT publisher send those same bytes.

JSON (documented in README.md, "The envelope")::

    {"type": "message", "seq": 1042, "device": "node-1", "message": "environment",
     "cmd": 16, "time": 1764063421.123456, "fields": {...},
     "sequence": 7, "address": 3, "raw": "aa55..."}

``sequence`` and ``address`` appear when the frame's profile has them, ``raw`` when the
source is configured to include it. ``message`` is null for a command the catalog does
not know (the topic then says ``unknown``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.records import json_default
from protocol.events import Frame

__all__ = ["UNKNOWN_MESSAGE", "Envelope"]

UNKNOWN_MESSAGE = "unknown"
"""The message part of the topic of a frame whose command the catalog does not know."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded frame from a named device, stamped by the gateway."""

    device: str
    frame: Frame
    received: float
    """Unix time the frame's last byte was read."""
    seq: int = 0
    """The gateway's sequence number, assigned by the hub (0 until then)."""
    include_raw: bool = False

    @property
    def topic(self) -> str:
        """``device/message``: what subscribers filter on (and, prefixed, the MQTT topic)."""
        return f"{self.device}/{self.frame.message or UNKNOWN_MESSAGE}"

    def record(self) -> dict[str, Any]:
        """The envelope as a plain dict."""
        frame = self.frame
        record: dict[str, Any] = {
            "type": "message",
            "seq": self.seq,
            "device": self.device,
            "message": frame.message,
            "cmd": frame.cmd,
            "time": self.received,
            "fields": frame.fields,
        }
        if frame.sequence is not None:
            record["sequence"] = frame.sequence
        if frame.address is not None:
            record["address"] = frame.address
        if self.include_raw:
            record["raw"] = frame.raw.hex()
        return record

    def to_json(self) -> bytes:
        """The envelope as compact JSON (bytes values as hex): serialise once, send many."""
        return orjson.dumps(self.record(), default=json_default)
