"""Events as JSON-ready records: the shape ``tgw decode`` prints, one object per line."""

from __future__ import annotations

from typing import Any

import orjson

from protocol.events import DecoderStatistics, Event, Frame, StreamError

__all__ = ["dumps", "event_record", "json_default", "statistics_record"]


def event_record(event: Event, time: float | None = None) -> dict[str, Any]:
    """Return ``event`` as a plain dict, ``{"type": "frame" or "error", ...}``, with
    ``"time"`` (when its bytes were read) last if it is known."""
    record = _event_record(event)
    if time is not None:
        record["time"] = time
    return record


def _event_record(event: Event) -> dict[str, Any]:
    match event:
        case Frame():
            record: dict[str, Any] = {
                "type": "frame",
                "offset": event.offset,
                "cmd": event.cmd,
                "message": event.message,
                "fields": event.fields,
            }
            if event.sequence is not None:
                record["sequence"] = event.sequence
            if event.address is not None:
                record["address"] = event.address
            if event.message is None:
                record["payload"] = event.payload.hex()
            record["raw"] = event.raw.hex()
            return record
        case StreamError():
            record = {
                "type": "error",
                "offset": event.offset,
                "kind": event.kind.value,
                "size": event.size,
                "detail": event.detail,
            }
            if event.cmd is not None:
                record["cmd"] = event.cmd
            return record


def statistics_record(statistics: DecoderStatistics) -> dict[str, Any]:
    """Return decoder statistics as a plain dict with string keys."""
    return {
        "bytes_fed": statistics.bytes_fed,
        "frames": statistics.frames,
        "unknown_frames": statistics.unknown_frames,
        "errors": {kind.value: count for kind, count in sorted(statistics.errors.items())},
        "bytes_in_frames": statistics.bytes_in_frames,
        "bytes_skipped": statistics.bytes_skipped,
        "bytes_pending": statistics.bytes_pending,
    }


def json_default(value: Any) -> Any:
    """``orjson`` fallback: bytes become hex strings; anything else is an error."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(record: dict[str, Any]) -> bytes:
    """Serialise a record as one line of JSON (bytes become hex strings), newline included."""
    return orjson.dumps(record, default=json_default, option=orjson.OPT_APPEND_NEWLINE)
