"""The WebSocket server: dashboards subscribe to decoded frames and send commands.

One port serves WebSocket clients and two plain HTTP endpoints:

* ``GET /healthz``: the JSON body and status code of the gateway's health callback;
* ``GET /metrics``: the Prometheus text exposition of :class:`GatewayMetrics`;
* any other request without a WebSocket upgrade: 404 with a one-line text body.

Authentication
--------------

A client gives a token in the ``Authorization: Bearer <token>`` header or, because
browsers cannot set headers, in the ``token`` query parameter (``ws://host:8765/?token=...``).
When ``read_tokens`` or ``command_tokens`` is configured, an upgrade without a valid
token is refused in the handshake with HTTP 401. A read token may subscribe; a command
token may subscribe and send commands. With no tokens configured, anyone may subscribe
and nobody may send commands.

Protocol
--------

Every message is one JSON object in a text frame; every object has a ``"type"``.

On connect, the server sends the gateway's greeting with the hub's latest sequence
number added::

    {"type": "hello", ..., "seq": 1041}

Requests, and the replies they get (a reply echoes the request's ``"id"``, any JSON
value, when it had one):

``{"type": "subscribe", "filters": ["node-1/+", "#"], "since": 1234}``
    Add topic filters (see :mod:`gateway.runtime.topics`; a topic is ``device/message``). If one
    filter is invalid, or the connection would hold more than
    :data:`gateway.runtime.hub.MAX_FILTERS`, nothing changes and the reply is error
    ``bad_filter``. Otherwise the reply is ``{"type": "subscribed", "filters": [...]}``
    listing *all* the connection's filters. With ``since`` (an integer, optional), the
    server then replays the messages of its history numbered after ``since`` that match
    any of the connection's filters, and live messages follow with no gap and no
    duplicate. If the history no longer reaches back to ``since`` (or ``since`` is ahead
    of the hub's latest number: the gateway restarted), error ``history_gap`` comes
    first, with ``"oldest"``: the oldest number still available; then what there is is
    replayed. A client that resumes after a reconnect subscribes with ``since`` set to
    the last ``seq`` it received; one that adds filters with ``since`` while already
    subscribed may receive again messages it has: ``seq`` tells.
``{"type": "unsubscribe", "filters": [...]}``
    Remove filters (those not held are ignored). Reply
    ``{"type": "unsubscribed", "filters": [...remaining...]}``; messages already queued
    for the connection may still arrive.
``{"type": "command", "device": "node-1", "message": "set_rate", "fields": {...}}``
    Send a command down to a device (``fields`` is optional, default ``{}``). Needs a
    command token (else error ``forbidden``) and is rate limited per connection with a
    token bucket of ``command_rate`` per second and bursts of ``command_burst`` (beyond:
    error ``rate_limited``). Reply ``{"type": "command_sent", "device", "message"}``
    once the gateway has written the frame, or error ``command_failed`` saying why
    (unknown or offline device, fields that do not encode).

What the server sends besides replies:

* messages, the envelope of :mod:`gateway.runtime.envelope`:
  ``{"type": "message", "seq": 1042, "device": "node-1", "message": "environment",
  "cmd": 16, "time": 1764063421.12, "fields": {...}}``, in ``seq`` order, for the topics
  that match the connection's filters;
* ``{"type": "status", "device", "online", "reason", "time"}`` when a device goes online
  or offline, whatever the filters;
* ``{"type": "dropped", "count": N}`` when a client too slow to keep up under policy
  ``drop`` lost N messages (its queue of ``queue_size`` was full) since the previous
  notice; the notice comes as soon as the client catches up, and the gaps in ``seq``
  say which messages were lost.

Errors are ``{"type": "error", "code": CODE, "message": "..."}`` (plus ``"id"``), and the
connection stays open. Codes: ``bad_json`` (not JSON, or a binary frame),
``not_an_object``, ``unknown_type``, ``bad_request`` (a missing or ill-typed key),
``bad_filter``, ``too_large`` (over ``max_message_size`` bytes), ``forbidden``,
``rate_limited``, ``command_failed``, ``history_gap``.

Closing codes: 1001 when the gateway shuts down; 1008 "too slow: N messages behind"
for a client whose queue overflowed under policy ``disconnect``; 1009 for a message
over the hard limit (:func:`hard_size_limit`); keepalive pings (``ping_interval``,
``ping_timeout``) drop dead peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import functools
import hmac
import http
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from gateway.config import WebSocketConfig
from gateway.runtime.hub import Hub, Subscriber
from gateway.runtime.metrics import CONTENT_TYPE, GatewayMetrics
from protocol.errors import GatewayError
from protocol.records import json_default

__all__ = ["CommandSink", "ErrorCode", "Role", "TokenBucket", "WebSocketServer", "hard_size_limit"]

logger = logging.getLogger(__name__)

HARD_SIZE_FLOOR = 2**20
"""The hard limit on incoming messages is at least this many bytes."""

INCOMING_QUEUE = 16
"""Incoming frames the websockets library buffers per connection before it stops reading."""


SEND_BATCH = 256
"""Messages a sender writes to its socket in one go, at most."""


def hard_size_limit(max_message_size: int) -> int:
    """Bytes beyond which an incoming message closes the connection (1009).

    Messages between ``max_message_size`` and this get an error ``too_large`` and the
    connection stays; this bound keeps the memory a client can make us hold bounded.
    """
    return max(4 * max_message_size, HARD_SIZE_FLOOR)


class ListenError(GatewayError):
    """The server cannot listen where it was told to."""


class CommandSink(Protocol):
    """Where commands from clients go: the gateway's sources, by device."""

    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        """Encode ``message`` with ``fields`` and write it to ``device``.

        Raise :class:`protocol.errors.GatewayError` (its str a one-line reason) when the
        device is unknown or offline or the command cannot be encoded.
        """


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


class Role(enum.StrEnum):
    """What a connection's token allows."""

    READ = "read"
    COMMAND = "command"


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> bool:
        """Take one token if there is one; False means the caller is over the limit."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class _ClientError(Exception):
    """A request the server refuses: becomes an error reply, the connection stays."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


@dataclass(slots=True)
class _Client:
    """The state of one connection."""

    connection: ServerConnection
    peer: str
    role: Role
    subscriber: Subscriber
    bucket: TokenBucket
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by whoever writes to the connection, so that a replay and the live messages
    that follow it go out in order."""
    replayed_through: int = 0
    """Live messages numbered up to this were sent by a replay: the sender skips them."""
    unflushed: int = 0
    """Frames :func:`_write_now` made this loop turn, waiting in the protocol for the flush."""


class WebSocketServer:
    """Serve the hub to WebSocket clients; ``/healthz`` and ``/metrics`` on the same port.

    ``hello`` returns the greeting (``{"type": "hello", ...}``) sent to each new client;
    ``health`` returns the status code and JSON body of ``/healthz``; ``commands``
    receives the commands of clients with a command token. Call :meth:`start`, and
    :meth:`close` when the gateway shuts down.
    """

    def __init__(
        self,
        config: WebSocketConfig,
        hub: Hub,
        metrics: GatewayMetrics,
        *,
        hello: Callable[[], dict[str, Any]],
        health: Callable[[], tuple[int, dict[str, Any]]],
        commands: CommandSink,
    ) -> None:
        self._config = config
        self._hub = hub
        self._metrics = metrics
        self._hello = hello
        self._health = health
        self._commands = commands
        self._server: Server | None = None
        self._commanded: set[str] = set()
        """Devices that accepted a command: the only device labels failures may use."""

    async def start(self) -> None:
        """Bind and start accepting connections (see :attr:`port` when the port is 0).

        Raise :class:`ListenError` (one line, with the reason) if the address is taken.
        """
        config = self._config
        try:
            self._server = await serve(
                self._serve,
                config.host,
                config.port,
                process_request=self._process_request,
                compression="deflate" if config.compression else None,
                ping_interval=config.ping_interval,
                ping_timeout=config.ping_timeout,
                max_size=hard_size_limit(config.max_message_size),
                max_queue=INCOMING_QUEUE,
            )
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ListenError(
                f"websocket: cannot listen on {config.host}:{config.port}: {reason}"
            ) from exc
        logger.info("websocket server listening on %s:%d", config.host, self.port)

    async def close(self) -> None:
        """Close every client with 1001 (going away), stop listening, wait for handlers."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        logger.info("websocket server closed")

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (empty before :meth:`start`)."""
        return () if self._server is None else tuple(self._server.sockets)

    @property
    def port(self) -> int:
        """The port listened on: the real one when the configured port is 0."""
        for sock in self.sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("the websocket server is not started")

    # The handshake: tokens and plain HTTP.

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return self._http(connection, request)
        if self._role(request) is None:
            self._metrics.client_errors.labels(code="unauthorized").inc()
            logger.info("websocket client %s refused: missing or invalid token", _peer(connection))
            response = connection.respond(
                http.HTTPStatus.UNAUTHORIZED,
                "a valid token is required: 'Authorization: Bearer <token>' or ?token=<token>\n",
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return None

    def _http(self, connection: ServerConnection, request: Request) -> Response:
        path = urlsplit(request.path).path
        if request.method != "GET":
            return connection.respond(
                http.HTTPStatus.METHOD_NOT_ALLOWED, f"method {request.method} not allowed\n"
            )
        if path == "/healthz":
            status, body = self._health()
            return _response(status, orjson.dumps(body, default=json_default), "application/json")
        if path == "/metrics":
            return _response(http.HTTPStatus.OK, self._metrics.render(), CONTENT_TYPE)
        return connection.respond(
            http.HTTPStatus.NOT_FOUND,
            f"no such path {path!r}: try /healthz, /metrics or a websocket upgrade\n",
        )

    def _role(self, request: Request) -> Role | None:
        """What the request's token allows; None if it must be refused."""
        config = self._config
        if not config.read_tokens and not config.command_tokens:
            return Role.READ
        token = _token(request)
        if token is None:
            return None
        if _known(token, config.command_tokens):
            return Role.COMMAND
        if _known(token, config.read_tokens):
            return Role.READ
        return None

    # One connection.

    async def _serve(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handshake is done
        role = self._role(connection.request) or Role.READ
        config = self._config
        peer = _peer(connection)
        subscriber = Subscriber(
            queue_size=config.queue_size, policy=config.slow_policy, name=f"websocket {peer}"
        )
        client = _Client(
            connection,
            peer,
            role,
            subscriber,
            TokenBucket(rate=config.command_rate, burst=config.command_burst),
        )
        self._hub.add(subscriber)
        self._metrics.websocket_clients.inc()
        logger.info("websocket client %s connected (%s)", peer, role)
        try:
            greeting = {**self._hello(), "seq": self._hub.last_seq}
            await connection.send(orjson.dumps(greeting, default=json_default), text=True)
            subscriber.write_now = functools.partial(_write_now, client)
            async with asyncio.TaskGroup() as group:
                receiver = group.create_task(self._receive(client), name=f"ws-receive {peer}")
                others = [group.create_task(self._send(client), name=f"ws-send {peer}")]
                if config.slow_policy == "disconnect":
                    others.append(group.create_task(self._watch(client), name=f"ws-watch {peer}"))
                await asyncio.wait([receiver])
                for task in others:
                    task.cancel()
        except ConnectionClosed:
            pass
        finally:
            self._hub.remove(subscriber)
            self._metrics.websocket_clients.dec()
            logger.info(
                "websocket client %s disconnected: code %s %s",
                peer,
                connection.close_code,
                connection.close_reason or "",
            )

    async def _receive(self, client: _Client) -> None:
        """Handle requests until the connection closes."""
        connection = client.connection
        try:
            while True:
                await self._handle(client, await connection.recv())
        except ConnectionClosed:
            return

    async def _send(self, client: _Client) -> None:
        """Write what the hub queued for the client, in order, until the connection closes."""
        subscriber = client.subscriber
        try:
            while True:
                batch = await subscriber.take(SEND_BATCH)
                async with client.lock:
                    through = client.replayed_through
                    payloads = [payload for seq, payload in batch if not 0 < seq <= through]
                    if payloads:
                        await _send_texts(client.connection, payloads)
        except ConnectionClosed:
            return

    async def _watch(self, client: _Client) -> None:
        """Under policy disconnect: close the client once its queue overflows."""
        behind = await client.subscriber.wait_overflowed()
        self._metrics.websocket_disconnects.labels(reason="slow").inc()
        logger.warning("closing websocket client %s: %d messages behind", client.peer, behind)
        await client.connection.close(
            CloseCode.POLICY_VIOLATION, f"too slow: {behind} messages behind"
        )

    # Requests.

    async def _handle(self, client: _Client, data: str | bytes) -> None:
        request: dict[str, Any] = {}
        try:
            request = self._parse(data)
            match request.get("type"):
                case "subscribe":
                    await self._subscribe(client, request)
                case "unsubscribe":
                    await self._unsubscribe(client, request)
                case "command":
                    await self._command(client, request)
                case None:
                    raise _ClientError(ErrorCode.BAD_REQUEST, "missing key 'type'")
                case str() as kind:
                    raise _ClientError(
                        ErrorCode.UNKNOWN_TYPE,
                        f"unknown type {_shorten(kind)!r}, expected subscribe, unsubscribe "
                        "or command",
                    )
                case other:
                    raise _ClientError(
                        ErrorCode.BAD_REQUEST,
                        f"key 'type' must be a string, got {_json_type(other)}",
                    )
        except _ClientError as error:
            await self._send_error(client, error, request)

    def _parse(self, data: str | bytes) -> dict[str, Any]:
        limit = self._config.max_message_size
        if isinstance(data, bytes):
            if len(data) > limit:
                raise _ClientError(
                    ErrorCode.TOO_LARGE, f"message of {len(data)} bytes, at most {limit} allowed"
                )
            raise _ClientError(
                ErrorCode.BAD_JSON, f"binary frame of {len(data)} bytes: send json in text frames"
            )
        # A character is at most 4 bytes of UTF-8: encode only when it may matter.
        if len(data) > limit // 4 and (size := len(data.encode())) > limit:
            raise _ClientError(
                ErrorCode.TOO_LARGE, f"message of {size} bytes, at most {limit} allowed"
            )
        try:
            request = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _ClientError(ErrorCode.BAD_JSON, f"not json: {str(exc).lower()}") from exc
        if not isinstance(request, dict):
            raise _ClientError(
                ErrorCode.NOT_AN_OBJECT, f"expected a json object, got {_json_type(request)}"
            )
        return request

    async def _subscribe(self, client: _Client, request: dict[str, Any]) -> None:
        filters = _strings(request, "filters")
        since = request.get("since")
        if since is not None and (not _is_int(since) or since < 0):
            raise _ClientError(
                ErrorCode.BAD_REQUEST,
                f"key 'since' must be an integer of 0 or more, got {_shorten(repr(since))}",
            )
        subscriber = client.subscriber
        hub = self._hub
        async with client.lock:
            # From here to the replay's end the sender waits: nothing published meanwhile
            # is lost (it is queued) or sent twice (it is numbered after ``through``).
            try:
                subscriber.subscribe(filters)
            except ValueError as exc:
                raise _ClientError(ErrorCode.BAD_FILTER, str(exc)) from exc
            through, oldest = hub.last_seq, hub.oldest_seq
            entries, complete = hub.since(since) if since is not None else ([], True)
            await self._write(
                client, _reply(request, type="subscribed", filters=subscriber.filters)
            )
            if since is None:
                return
            if not complete:
                await self._write_error(client, _history_gap(since, through, oldest), request)
            sent = 0
            for _seq, topic, payload in entries:
                if subscriber.matches(topic):
                    await client.connection.send(payload, text=True)
                    sent += 1
            client.replayed_through = max(client.replayed_through, through)
        self._metrics.websocket_sent.inc(sent)

    async def _unsubscribe(self, client: _Client, request: dict[str, Any]) -> None:
        filters = _strings(request, "filters")
        client.subscriber.unsubscribe(filters)
        async with client.lock:
            await self._write(
                client, _reply(request, type="unsubscribed", filters=client.subscriber.filters)
            )

    async def _command(self, client: _Client, request: dict[str, Any]) -> None:
        if client.role is not Role.COMMAND:
            if self._config.command_tokens:
                reason = "this connection's token may not send commands: use a command token"
            else:
                reason = "commands are disabled: no command tokens are configured"
            raise _ClientError(ErrorCode.FORBIDDEN, reason)
        if not client.bucket.take():
            raise _ClientError(
                ErrorCode.RATE_LIMITED,
                f"more than {client.bucket.rate:g} commands per second "
                f"(bursts of {client.bucket.burst}): try again later",
            )
        device = _string(request, "device")
        message = _string(request, "message")
        fields = request.get("fields", {})
        if not isinstance(fields, dict):
            raise _ClientError(
                ErrorCode.BAD_REQUEST, f"key 'fields' must be an object, got {_json_type(fields)}"
            )
        try:
            await self._commands.send_command(device, message, fields)
        except GatewayError as exc:
            label = device if device in self._commanded else "unknown"
            self._metrics.commands.labels(device=label, result="failed").inc()
            logger.info("command %s to %s from %s failed: %s", message, device, client.peer, exc)
            raise _ClientError(ErrorCode.COMMAND_FAILED, str(exc)) from exc
        self._commanded.add(device)
        self._metrics.commands.labels(device=device, result="sent").inc()
        logger.info("command %s sent to %s for %s", message, device, client.peer)
        async with client.lock:
            await self._write(
                client, _reply(request, type="command_sent", device=device, message=message)
            )

    # Writing.

    async def _send_error(
        self, client: _Client, error: _ClientError, request: dict[str, Any]
    ) -> None:
        async with client.lock:
            await self._write_error(client, error, request)

    async def _write_error(
        self, client: _Client, error: _ClientError, request: dict[str, Any]
    ) -> None:
        """Send an error reply; the caller holds ``client.lock``."""
        self._metrics.client_errors.labels(code=error.code.value).inc()
        logger.debug("websocket client %s: %s: %s", client.peer, error.code, error.message)
        record = _reply(
            request, type="error", code=error.code.value, message=error.message, **error.extra
        )
        await self._write(client, record)

    async def _write(self, client: _Client, record: dict[str, Any]) -> None:
        """Send one JSON object; the caller holds ``client.lock``."""
        await client.connection.send(orjson.dumps(record, default=json_default), text=True)


# Helpers.


def _write_now(client: _Client, seq: int, payload: bytes) -> bool:
    """Frame ``payload`` at once, as ``websockets.broadcast`` does, if nothing is before it;
    it is written, with whatever else this loop turn frames, when the turn ends.

    Return False, so that the hub buffers it for the sender instead, when the sender
    holds the connection (a replay, a reply), the socket is backed up, or the
    connection is not open.
    """
    connection = client.connection
    if (
        client.unflushed >= SEND_BATCH  # a burst: the rest waits in the bounded buffer
        or client.lock.locked()
        or connection.protocol.state is not State.OPEN
        or connection.paused
        or connection.send_in_progress is not None
    ):
        return False
    if 0 < seq <= client.replayed_through:
        return True
    try:
        connection.protocol.send_text(payload)
    except Exception:
        return False
    if not client.unflushed:  # one write per connection for a burst of messages
        asyncio.get_running_loop().call_soon(_flush, client)
    client.unflushed += 1
    return True


def _flush(client: _Client) -> None:
    """Write what :func:`_write_now` framed since the last flush."""
    client.unflushed = 0
    with contextlib.suppress(Exception):  # a failing socket: its handler learns of it
        _write_out(client.connection)


def _write_out(connection: ServerConnection) -> None:
    """Write the frames the protocol holds in one ``transport.write``.

    ``connection.send_data()`` writes them one by one: a system call per frame while
    the socket takes them, where one call does for a whole burst.
    """
    chunks = connection.protocol.data_to_send()
    data = b"".join(chunks)
    if data:
        connection.transport.write(data)
    if not all(chunks):  # an empty chunk: the protocol closed, half-close as websockets does
        if connection.transport.can_write_eof():
            connection.transport.write_eof()
        else:
            connection.transport.close()


async def _send_texts(connection: ServerConnection, payloads: list[bytes]) -> None:
    """Send ``payloads`` as text frames with one write, then wait while the client lags.

    This is how ``websockets.broadcast`` writes (``protocol.send_text`` then
    ``send_data``), for a burst of messages at once; ``drain`` then holds the sender
    while the socket's buffer is over its high-water mark, so that a slow client's
    backlog stays in its bounded subscriber buffer. When the connection is not open,
    ``send`` raises the right ``ConnectionClosed``.
    """
    if connection.protocol.state is not State.OPEN or connection.send_in_progress is not None:
        for payload in payloads:
            await connection.send(payload, text=True)
        return
    for payload in payloads:
        connection.protocol.send_text(payload)
    _write_out(connection)
    await connection.drain()


def _reply(request: dict[str, Any], **record: Any) -> dict[str, Any]:
    """A reply to ``request``: ``record``, with the request's ``"id"`` when it had one."""
    if "id" in request:
        record["id"] = request["id"]
    return record


def _history_gap(since: int, last: int, oldest: int) -> _ClientError:
    if since > last:
        message = (
            f"seq {since} is ahead of the gateway's last seq {last}: the gateway restarted, "
            f"replaying from seq {oldest}"
        )
    else:
        message = (
            f"messages {since + 1} to {oldest - 1} are no longer in the history, "
            f"replaying from seq {oldest}"
        )
    return _ClientError(ErrorCode.HISTORY_GAP, message, oldest=oldest)


def _strings(request: dict[str, Any], key: str) -> list[str]:
    if key not in request:
        raise _ClientError(ErrorCode.BAD_REQUEST, f"missing key {key!r}")
    value = request[key]
    if not isinstance(value, list):
        raise _ClientError(
            ErrorCode.BAD_REQUEST, f"key {key!r} must be an array, got {_json_type(value)}"
        )
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _ClientError(
                ErrorCode.BAD_REQUEST,
                f"key {key!r} must hold strings, item {index} is {_json_type(item)}",
            )
    return value


def _string(request: dict[str, Any], key: str) -> str:
    if key not in request:
        raise _ClientError(ErrorCode.BAD_REQUEST, f"missing key {key!r}")
    value = request[key]
    if not isinstance(value, str) or not value:
        raise _ClientError(
            ErrorCode.BAD_REQUEST,
            f"key {key!r} must be a non-empty string, got {_json_type(value)}",
        )
    return value


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


def _token(request: Request) -> str | None:
    """The token of ``request``: the bearer token of its Authorization header, or ?token=."""
    authorization = request.headers.get("Authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    tokens = parse_qs(urlsplit(request.path).query).get("token")
    return tokens[0] if tokens else None


def _known(token: str, tokens: tuple[str, ...]) -> bool:
    """True if ``token`` is one of ``tokens``, compared in constant time."""
    given = token.encode()
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(given, candidate.encode())
    return found


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _response(status: int, body: bytes, content_type: str) -> Response:
    """A plain HTTP response to a request that is not a WebSocket upgrade."""
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
        ]
    )
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return Response(status, phrase, headers, body)
