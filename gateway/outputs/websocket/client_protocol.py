"""The JSON protocol between the gateway and its WebSocket clients, without I/O.

:class:`ClientProtocol` turns what one client sends (a text or binary message) into a
request (:class:`Subscribe`, :class:`Unsubscribe`, :class:`Command`) or a
:class:`ClientError`, deciding on its own everything that needs no I/O: syntax, size,
the connection's role, its rate limit. The functions below build what the server sends;
:func:`bad_filter`, :func:`command_failed` and :func:`history_gap` are the errors only
the server can find out. The server does the I/O and sends ``error_reply(error)`` for
every :class:`ClientError`. docs/websocket.md is the specification.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.outputs.websocket.auth import Role
from gateway.outputs.websocket.ratelimit import TokenBucket
from gateway.runtime.journal import Resume
from gateway.runtime.topics import validate_filter
from protocol.records import json_default

__all__ = [
    "TOO_SLOW",
    "ClientError",
    "ClientProtocol",
    "Command",
    "ErrorCode",
    "Request",
    "RequestId",
    "Subscribe",
    "Unsubscribe",
    "bad_filter",
    "command_failed",
    "command_sent_reply",
    "dropped_notice",
    "error_reply",
    "hard_size_limit",
    "hello_message",
    "history_gap",
    "subscribed_reply",
    "too_slow_reason",
    "unsubscribed_reply",
]

HARD_SIZE_FLOOR = 2**20
"""The hard limit on incoming messages is at least this many bytes."""

TOO_SLOW = 1008
"""The closing code of a client disconnected for being too slow (policy violation)."""


class ErrorCode(enum.StrEnum):
    """The ``code`` of an error sent to a client."""

    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    BAD_FILTER = "bad_filter"
    TOO_LARGE = "too_large"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    COMMAND_FAILED = "command_failed"
    HISTORY_GAP = "history_gap"


@dataclass(frozen=True, slots=True)
class RequestId:
    """The ``"id"`` of a request, any JSON value (``null`` included): its replies echo it."""

    value: Any


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Add ``filters``; with ``since``, replay the history numbered after it first."""

    filters: tuple[str, ...]
    since: int | None = None
    id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Remove ``filters`` (those not held are ignored)."""

    filters: tuple[str, ...]
    id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """Send ``message`` with ``fields`` down to ``device``: the role and rate limit allowed it."""

    device: str
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    id: RequestId | None = None


Request = Subscribe | Unsubscribe | Command


@dataclass(frozen=True, slots=True)
class ClientError:
    """A request refused: the client gets ``error_reply(self)`` and the connection stays."""

    code: ErrorCode
    message: str
    id: RequestId | None = None
    oldest: int | None = None
    """For ``history_gap``: the oldest sequence number still in the history."""


class _RefusedError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def hard_size_limit(max_message_size: int) -> int:
    """Bytes beyond which an incoming message closes the connection (1009).

    Messages between ``max_message_size`` and this get an error ``too_large`` and the
    connection stays; this bound keeps the memory a client can make us hold bounded.
    """
    return max(4 * max_message_size, HARD_SIZE_FLOOR)


class ClientProtocol:
    """One connection's side of the protocol: what it sends in, requests or errors out.

    ``role`` is what the connection's token allows; ``command_tokens_configured`` says
    whether command tokens exist at all (a refusal says which of the two is missing);
    ``bucket`` limits its commands.
    """

    def __init__(
        self,
        *,
        role: Role,
        max_message_size: int,
        bucket: TokenBucket,
        command_tokens_configured: bool,
    ) -> None:
        self.role = role
        self.max_message_size = max_message_size
        self.bucket = bucket
        self._command_tokens_configured = command_tokens_configured

    def receive(self, data: str | bytes) -> Request | ClientError:
        """The request in ``data`` (one WebSocket message), or why it is refused.

        A command takes a token from the bucket once the role allows it, before its
        keys are checked.
        """
        record: dict[str, Any] = {}
        try:
            record = self._load(data)
            return self._request(record)
        except _RefusedError as refused:
            return ClientError(refused.code, refused.message, _id(record))

    def _load(self, data: str | bytes) -> dict[str, Any]:
        limit = self.max_message_size
        if isinstance(data, bytes):
            if len(data) > limit:
                raise _RefusedError(
                    ErrorCode.TOO_LARGE, f"message of {len(data)} bytes, at most {limit} allowed"
                )
            raise _RefusedError(
                ErrorCode.BAD_JSON, f"binary frame of {len(data)} bytes: send json in text frames"
            )
        # A character is at most 4 bytes of UTF-8: encode only when it may matter.
        if len(data) > limit // 4 and (size := len(data.encode())) > limit:
            raise _RefusedError(
                ErrorCode.TOO_LARGE, f"message of {size} bytes, at most {limit} allowed"
            )
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _RefusedError(ErrorCode.BAD_JSON, f"not json: {str(exc).lower()}") from exc
        if not isinstance(record, dict):
            raise _RefusedError(
                ErrorCode.NOT_AN_OBJECT, f"expected a json object, got {_json_type(record)}"
            )
        return record

    def _request(self, record: dict[str, Any]) -> Request:
        match record.get("type"):
            case "subscribe":
                return Subscribe(_filters(record), _since(record), _id(record))
            case "unsubscribe":
                return Unsubscribe(tuple(_strings(record, "filters")), _id(record))
            case "command":
                self._allow_command()
                fields = record.get("fields", {})
                if not isinstance(fields, dict):
                    raise _RefusedError(
                        ErrorCode.BAD_REQUEST,
                        f"key 'fields' must be an object, got {_json_type(fields)}",
                    )
                return Command(
                    _string(record, "device"), _string(record, "message"), fields, _id(record)
                )
            case None:
                raise _RefusedError(ErrorCode.BAD_REQUEST, "missing key 'type'")
            case str() as kind:
                raise _RefusedError(
                    ErrorCode.UNKNOWN_TYPE,
                    f"unknown type {_shorten(kind)!r}, expected subscribe, unsubscribe or command",
                )
            case other:
                raise _RefusedError(
                    ErrorCode.BAD_REQUEST, f"key 'type' must be a string, got {_json_type(other)}"
                )

    def _allow_command(self) -> None:
        if self.role is not Role.COMMAND:
            if self._command_tokens_configured:
                reason = "this connection's token may not send commands: use a command token"
            else:
                reason = "commands are disabled: no command tokens are configured"
            raise _RefusedError(ErrorCode.FORBIDDEN, reason)
        bucket = self.bucket
        if not bucket.take():
            raise _RefusedError(
                ErrorCode.RATE_LIMITED,
                f"more than {bucket.rate:g} commands per second (bursts of {bucket.burst}): "
                "try again later",
            )


# Errors the server finds out.


def bad_filter(request: Subscribe, reason: str) -> ClientError:
    """The filters of ``request`` cannot be added: ``reason`` (too many, say)."""
    return ClientError(ErrorCode.BAD_FILTER, reason, request.id)


def command_failed(request: Command, reason: str) -> ClientError:
    """The gateway could not send ``request``'s command: ``reason`` (unknown device ...)."""
    return ClientError(ErrorCode.COMMAND_FAILED, reason, request.id)


def history_gap(request: Subscribe, resume: Resume) -> ClientError:
    """The journal cannot give everything after ``request.since`` (:class:`Resume` says
    what is missing and why); what it has is replayed.

    A ``since`` ahead of the latest sequence number comes from a client that saw an
    earlier run of the gateway.
    """
    if resume.ahead:
        message = (
            f"seq {resume.since} is ahead of the gateway's last seq {resume.last}: the gateway "
            f"restarted, replaying from seq {resume.oldest}"
        )
    else:
        missing = "; ".join(
            f"messages {gap.first} to {gap.last} may have been numbered before the gateway "
            "stopped uncleanly and are not in the history"
            if gap.uncertain
            else f"messages {gap.first} to {gap.last} are no longer in the history"
            for gap in resume.gaps
        )
        message = f"{missing}, replaying from seq {resume.first}"
    return ClientError(ErrorCode.HISTORY_GAP, message, request.id, oldest=resume.oldest)


# What the server sends.


def hello_message(greeting: Mapping[str, Any], seq: int) -> bytes:
    """The greeting of a new connection, with the latest sequence number ``seq``."""
    return _dumps({**greeting, "seq": seq})


def subscribed_reply(request: Subscribe, filters: Sequence[str]) -> bytes:
    """``subscribed``, with all the connection's ``filters`` now."""
    return _reply(request.id, type="subscribed", filters=list(filters))


def unsubscribed_reply(request: Unsubscribe, filters: Sequence[str]) -> bytes:
    """``unsubscribed``, with the connection's remaining ``filters``."""
    return _reply(request.id, type="unsubscribed", filters=list(filters))


def command_sent_reply(request: Command) -> bytes:
    """``command_sent``: the gateway wrote the command's frame to the device."""
    return _reply(request.id, type="command_sent", device=request.device, message=request.message)


def error_reply(error: ClientError) -> bytes:
    """``error`` with its code and message (and ``oldest`` for a history gap)."""
    extra = {} if error.oldest is None else {"oldest": error.oldest}
    return _reply(error.id, type="error", code=error.code.value, message=error.message, **extra)


def dropped_notice(count: int) -> bytes:
    """``dropped``: ``count`` messages were lost since the previous notice."""
    return orjson.dumps({"type": "dropped", "count": count})


def too_slow_reason(behind: int) -> str:
    """The closing reason that goes with :data:`TOO_SLOW`."""
    return f"too slow: {behind} messages behind"


# Helpers.


def _reply(request_id: RequestId | None, **record: Any) -> bytes:
    if request_id is not None:
        record["id"] = request_id.value
    return _dumps(record)


def _dumps(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, default=json_default)


def _id(record: dict[str, Any]) -> RequestId | None:
    return RequestId(record["id"]) if "id" in record else None


def _filters(record: dict[str, Any]) -> tuple[str, ...]:
    filters = _strings(record, "filters")
    for pattern in filters:
        try:
            validate_filter(pattern)
        except ValueError as exc:
            raise _RefusedError(ErrorCode.BAD_FILTER, str(exc)) from exc
    return tuple(filters)


def _since(record: dict[str, Any]) -> int | None:
    since = record.get("since")
    if since is not None and (not _is_int(since) or since < 0):
        raise _RefusedError(
            ErrorCode.BAD_REQUEST,
            f"key 'since' must be an integer of 0 or more, got {_shorten(_json(since))}",
        )
    return since


def _strings(record: dict[str, Any], key: str) -> list[str]:
    if key not in record:
        raise _RefusedError(ErrorCode.BAD_REQUEST, f"missing key {key!r}")
    value = record[key]
    if not isinstance(value, list):
        raise _RefusedError(
            ErrorCode.BAD_REQUEST, f"key {key!r} must be an array, got {_json_type(value)}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _RefusedError(
                ErrorCode.BAD_REQUEST,
                f"key {key!r} must hold strings, item {index} is {_json_type(item)}",
            )
    return value


def _string(record: dict[str, Any], key: str) -> str:
    if key not in record:
        raise _RefusedError(ErrorCode.BAD_REQUEST, f"missing key {key!r}")
    value = record[key]
    if not isinstance(value, str) or not value:
        raise _RefusedError(
            ErrorCode.BAD_REQUEST,
            f"key {key!r} must be a non-empty string, got {_json_type(value)}",
        )
    return value


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    """What ``value`` is, in JSON terms, for error messages."""
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "an empty string" if not value else "a string"
        case list():
            return "an array"
        case dict():
            return "an object"
        case _:
            return type(value).__name__


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
