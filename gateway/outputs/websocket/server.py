"""The WebSocket server: the I/O of the client protocol, one task group per connection.

Each connection gets the greeting, then a receiver (requests, through
:class:`~gateway.outputs.websocket.client_protocol.ClientProtocol`), a sender (what the
hub buffered for it) and, under policy ``disconnect``, a watcher that closes it when it
falls too far behind. docs/websocket.md is the protocol.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable, Mapping
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.config import WebSocketConfig
from gateway.outputs.websocket.auth import Role, Tokens
from gateway.outputs.websocket.client_protocol import (
    TOO_SLOW,
    ClientError,
    ClientProtocol,
    Command,
    Subscribe,
    Unsubscribe,
    bad_filter,
    command_failed,
    command_sent_reply,
    error_reply,
    hard_size_limit,
    hello_message,
    history_gap,
    subscribed_reply,
    too_slow_reason,
    unsubscribed_reply,
)
from gateway.outputs.websocket.hub import Hub, Subscriber
from gateway.outputs.websocket.internals import DirectWriter, TurnFlush
from gateway.outputs.websocket.metrics import WebSocketMetrics
from gateway.outputs.websocket.ratelimit import TokenBucket
from gateway.runtime.http import Connections, HttpEndpoints, close_server, listen_error, response
from gateway.runtime.journal import Journal
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.output import CommandSink
from protocol.errors import GatewayError

__all__ = ["SEND_BATCH", "WebSocketServer"]

logger = logging.getLogger(__name__)

INCOMING_QUEUE = 16
"""Incoming frames the websockets library buffers per connection before it stops reading."""

SEND_BATCH = 256
"""Messages a sender writes to its socket in one go, at most."""


class _Client:
    """The state of one connection."""

    def __init__(
        self,
        connection: ServerConnection,
        peer: str,
        protocol: ClientProtocol,
        name: str,
        *,
        config: WebSocketConfig,
        on_filters_changed: Callable[[], None],
        turn: TurnFlush,
    ) -> None:
        self.connection = connection
        self.peer = peer
        self.protocol = protocol
        self.lock = asyncio.Lock()
        """Held by whoever writes with ``connection.send`` (the greeting, replies, a
        replay): live messages then wait in the buffer, so that they follow in order."""
        self.replayed_through = 0
        """Live messages numbered up to this were sent by a replay: they are skipped."""
        self.writer = DirectWriter(connection, batch=SEND_BATCH, turn=turn)
        self.subscriber = Subscriber(
            queue_size=config.queue_size,
            policy=config.slow_policy,
            name=name,
            write_now=self._write_now,
            on_filters_changed=on_filters_changed,
        )
        self.tasks: list[asyncio.Task[None]] = []

    def _write_now(self, seq: int, payload: bytes) -> bool:
        if self.lock.locked():
            return False
        if 0 < seq <= self.replayed_through:
            return True
        return self.writer.write_now(payload)


class WebSocketServer:
    """Serves the hub's fan-out and the journal's history to WebSocket clients.

    ``hello`` returns the greeting (``{"type": "hello", ...}``) each new client gets,
    with the journal's last sequence number added; ``http`` answers the plain HTTP
    requests on the same port (None: they get 426, upgrade required); ``commands``
    receives the commands of clients with a command token. Call :meth:`start`, and
    :meth:`close` when the gateway shuts down.
    """

    def __init__(
        self,
        config: WebSocketConfig,
        *,
        hub: Hub,
        journal: Journal,
        metrics: GatewayMetrics,
        hello: Callable[[], Mapping[str, Any]],
        http: HttpEndpoints | None,
        commands: CommandSink,
    ) -> None:
        self._config = config
        self._hub = hub
        self._journal = journal
        self._metrics = metrics.group(WebSocketMetrics)
        self._hello = hello
        self._http = http
        self._commands = commands
        self._tokens = Tokens(read=config.read_tokens, command=config.command_tokens)
        self._server: Server | None = None
        self._connections = Connections()
        self._clients: set[_Client] = set()
        self._turn = TurnFlush()

    async def start(self) -> None:
        """Bind and start accepting connections (see :attr:`port` when the port is 0).

        Raise :class:`~gateway.runtime.http.ListenError` (one line, with the reason and
        the options that choose another port) if the address is taken.
        """
        config = self._config
        try:
            self._server = await serve(
                self._serve,
                config.host,
                config.port,
                process_request=self._process_request,
                create_connection=self._connections.connection_class,
                compression="deflate" if config.compression else None,
                ping_interval=config.ping_interval,
                ping_timeout=config.ping_timeout,
                max_size=hard_size_limit(config.max_message_size),
                max_queue=INCOMING_QUEUE,
            )
        except OSError as exc:
            raise listen_error(
                "websocket", config.host, config.port, exc, "--port or [websocket] port"
            ) from exc
        logger.info("websocket server listening on %s:%d", config.host, self.port)

    async def close(self, deadline: float) -> None:
        """Close every client with 1001 (going away), stop listening, wait for handlers.

        Return by ``deadline`` (event loop time) whatever the clients do: those still
        connected shortly before it are cut off.
        """
        if self._server is None:
            return
        aborted = await close_server(
            self._server, self._connections, deadline, aborting=self._stop_clients
        )
        if aborted:
            logger.warning(
                "websocket server closed: %d connection(s) did not close in time, cut off",
                aborted,
            )
        else:
            logger.info("websocket server closed")

    def _stop_clients(self) -> None:
        for client in self._clients:
            for task in client.tasks:
                task.cancel()

    @property
    def clients(self) -> int:
        """Connected clients."""
        return len(self._clients)

    @property
    def port(self) -> int:
        """The port listened on: the real one when the configured port is 0."""
        if self._server is not None:
            for sock in self._server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the websocket server is not started")

    # The handshake: tokens and plain HTTP.

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if self._http is None:
                return response(
                    http.HTTPStatus.UPGRADE_REQUIRED,
                    "this port serves websocket upgrades only: /healthz and /metrics are on "
                    "the [http] port\n",
                )
            return self._http.respond(request)
        if self._role(request) is None:
            self._metrics.client_errors.labels(code="unauthorized").inc()
            logger.info("websocket client %s refused: missing or invalid token", _peer(connection))
            refusal = connection.respond(
                http.HTTPStatus.UNAUTHORIZED,
                "a valid token is required: 'Authorization: Bearer <token>' or ?token=<token>\n",
            )
            refusal.headers["WWW-Authenticate"] = "Bearer"
            return refusal
        return None

    def _role(self, request: Request) -> Role | None:
        return self._tokens.role(request.headers.get("Authorization"), request.path)

    # One connection.

    async def _serve(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handshake is done
        config = self._config
        role = self._role(connection.request) or Role.READ
        peer = _peer(connection)
        protocol = ClientProtocol(
            role=role,
            max_message_size=config.max_message_size,
            bucket=TokenBucket(rate=config.command_rate, burst=config.command_burst),
            command_tokens_configured=bool(config.command_tokens),
        )
        client = _Client(
            connection,
            peer,
            protocol,
            f"websocket {peer}",
            config=config,
            on_filters_changed=self._hub.forget_routes,
            turn=self._turn,
        )
        self._hub.add(client.subscriber)
        self._clients.add(client)
        self._metrics.websocket_clients.inc()
        logger.info("websocket client %s connected (%s)", peer, role)
        try:
            async with client.lock:  # live messages wait for the greeting
                greeting = hello_message(self._hello(), self._journal.last_seq)
                await connection.send(greeting, text=True)
            async with asyncio.TaskGroup() as group:
                client.tasks = [group.create_task(self._send(client), name=f"ws-send {peer}")]
                if config.slow_policy == "disconnect":
                    client.tasks.append(
                        group.create_task(self._watch(client), name=f"ws-watch {peer}")
                    )
                try:  # in this task: one task fewer per client (memory, P6 of issue 11)
                    await self._receive(client)
                finally:
                    for task in client.tasks:
                        task.cancel()
        except ConnectionClosed:
            pass
        finally:
            self._hub.remove(client.subscriber)
            self._clients.discard(client)
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
        """Write what the hub buffered for the client, in order, until the connection closes."""
        subscriber = client.subscriber
        try:
            while True:
                batch = await subscriber.take(SEND_BATCH)
                async with client.lock:
                    through = client.replayed_through
                    payloads = [payload for seq, payload in batch if not 0 < seq <= through]
                    if payloads:
                        await client.writer.send(payloads)
        except ConnectionClosed:
            return

    async def _watch(self, client: _Client) -> None:
        """Under policy disconnect: close the client once its buffer overflows."""
        behind = await client.subscriber.wait_overflowed()
        self._metrics.websocket_disconnects.labels(reason="slow").inc()
        logger.warning("closing websocket client %s: %d messages behind", client.peer, behind)
        await client.connection.close(TOO_SLOW, too_slow_reason(behind))

    # Requests.

    async def _handle(self, client: _Client, data: str | bytes) -> None:
        match client.protocol.receive(data):
            case ClientError() as error:
                async with client.lock:
                    await self._write_error(client, error)
            case Subscribe() as request:
                await self._subscribe(client, request)
            case Unsubscribe() as request:
                client.subscriber.unsubscribe(request.filters)
                async with client.lock:
                    await self._write(
                        client, unsubscribed_reply(request, client.subscriber.filters)
                    )
            case Command() as request:
                await self._command(client, request)

    async def _subscribe(self, client: _Client, request: Subscribe) -> None:
        subscriber = client.subscriber
        journal = self._journal
        sent = 0
        async with client.lock:
            # From here to the replay's end the sender waits: nothing published meanwhile
            # is lost (it is buffered) or sent twice (it is numbered after ``through``).
            try:
                subscriber.subscribe(request.filters)
            except ValueError as exc:
                await self._write_error(client, bad_filter(request, str(exc)))
                return
            resume = journal.since(request.since) if request.since is not None else None
            await self._write(client, subscribed_reply(request, subscriber.filters))
            if resume is None:
                return
            if not resume.complete:
                await self._write_error(client, history_gap(request, resume))
            for _seq, topic, payload in resume.entries:
                if subscriber.matches(topic):
                    await client.connection.send(payload, text=True)
                    sent += 1
            client.replayed_through = max(client.replayed_through, resume.last)
        self._metrics.websocket_sent.inc(sent)

    async def _command(self, client: _Client, request: Command) -> None:
        device, message = request.device, request.message
        try:
            await self._commands.send_command(device, message, dict(request.fields))
        except GatewayError as exc:
            logger.info("command %s to %s from %s failed: %s", message, device, client.peer, exc)
            async with client.lock:
                await self._write_error(client, command_failed(request, str(exc)))
            return
        logger.info("command %s sent to %s for %s", message, device, client.peer)
        async with client.lock:
            await self._write(client, command_sent_reply(request))

    # Writing: the caller holds ``client.lock``.

    async def _write_error(self, client: _Client, error: ClientError) -> None:
        self._metrics.client_errors.labels(code=error.code.value).inc()
        logger.debug("websocket client %s: %s: %s", client.peer, error.code, error.message)
        await self._write(client, error_reply(error))

    async def _write(self, client: _Client, data: bytes) -> None:
        await client.connection.send(data, text=True)


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
