"""Events as JSON-ready records: the JSON shape of a frame, written once.

:func:`frame_record` builds the part every JSON form of a frame shares: ``cmd``,
``message``, ``fields``, the header fields by name, and ``payload``/``raw`` as hex.
:func:`event_record` adds what ``tgw decode`` prints around it; the gateway's envelope
adds its own keys the same way. Bytes become hex strings.
"""

from __future__ import annotations

from typing import Any

import orjson

from protocol.events import DecoderStatistics, Event, Frame, StreamError

__all__ = [
    "RESERVED_KEYS",
    "dumps",
    "event_record",
    "frame_record",
    "json_default",
    "statistics_record",
]

RESERVED_KEYS = frozenset(
    # tgw decode records (frames, errors, gaps), envelopes, golden files
    {"type", "offset", "cmd", "message", "fields", "payload", "raw", "time"}
    | {"kind", "size", "detail", "seq", "device", "dump"}
)
"""Keys that records and envelopes use themselves: no header field may take one as name,
since header fields appear beside them, at the top level."""


def frame_record(frame: Frame, *, raw: bool, unknown_payload: bool) -> dict[str, Any]:
    """Return ``{"cmd", "message", "fields", <header fields>, "payload", "raw"}`` for ``frame``.

    The header fields other than ``cmd`` and ``length`` come in the profile's order,
    each under its name (``"sequence": 7``). ``payload`` (hex) is there only if
    ``unknown_payload`` and the catalog does not know the command; ``raw`` (the whole
    frame, hex) only if ``raw``.
    """
    record: dict[str, Any] = {"cmd": frame.cmd, "message": frame.message, "fields": frame.fields}
    if frame.header:
        record.update(frame.header)
    if unknown_payload and frame.message is None:
        record["payload"] = frame.payload.hex()
    if raw:
        record["raw"] = frame.raw.hex()
    return record


def event_record(event: Event, time: float | None = None) -> dict[str, Any]:
    """Return ``event`` as ``tgw decode`` prints it: ``{"type": "frame" or "error", ...}``,
    with ``"time"`` (when its bytes were read) last if it is known."""
    match event:
        case Frame():
            record: dict[str, Any] = {"type": "frame", "offset": event.offset}
            record.update(frame_record(event, raw=True, unknown_payload=True))
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
    if time is not None:
        record["time"] = time
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
