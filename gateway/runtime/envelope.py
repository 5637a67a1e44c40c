"""The envelope: one shape for a decoded frame everywhere it goes (WebSocket, MQTT, logs).

A frame from a source becomes an :class:`Envelope` once, gets the gateway's sequence
number when it is published, and is serialised to JSON once (:meth:`Envelope.to_json`);
every output sends those same bytes. The JSON (README.md, "The envelope")::

    {"type": "message", "seq": 1042, "device": "node-1", "message": "environment",
     "cmd": 16, "time": 1764063421.123456, "fields": {...},
     "sequence": 7, "address": 3, "raw": "aa55..."}

The frame's part of it is :func:`protocol.records.frame_record`'s: the header fields
(``sequence``, ``address``, named ones) when the profile has them, ``raw`` when the
source includes it. ``message`` is null for a command the catalog does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from protocol.events import Frame
from protocol.records import frame_record, json_default

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
    """The gateway's sequence number, assigned when it is published (0 until then)."""
    include_raw: bool = False

    def numbered(self, seq: int) -> Envelope:
        """This envelope with the gateway's sequence number ``seq``."""
        # dataclasses.replace() costs several times this, once per frame
        return Envelope(self.device, self.frame, self.received, seq, self.include_raw)

    @property
    def topic(self) -> str:
        """``device/message``: what subscribers filter on (and, prefixed, the MQTT topic)."""
        return f"{self.device}/{self.frame.message or UNKNOWN_MESSAGE}"

    def record(self) -> dict[str, Any]:
        """The envelope as a plain dict."""
        record: dict[str, Any] = {
            "type": "message",
            "seq": self.seq,
            "device": self.device,
            # placeholders, filled by frame_record below: they set the envelope's key order
            "message": None,
            "cmd": None,
            "time": self.received,
        }
        record.update(frame_record(self.frame, raw=self.include_raw, unknown_payload=False))
        return record

    def to_json(self) -> bytes:
        """The envelope as compact JSON (bytes values as hex): serialise once, send many."""
        return orjson.dumps(self.record(), default=json_default)
