"""The gateway's plain HTTP endpoints: ``/healthz`` and ``/metrics``, and where they listen.

:class:`HttpEndpoints` answers a request that is not a WebSocket upgrade. They listen on
``[http] host:port`` (by default the WebSocket server's): when the WebSocket server is on
and listens there, it hands such requests to them (:func:`shares_websocket_port`);
otherwise :func:`standalone_http_server` gives the server of their own to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import http
import logging
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.config import GatewayConfig
from gateway.runtime.metrics import CONTENT_TYPE, GatewayMetrics
from protocol.errors import GatewayError, os_error_reason
from protocol.records import json_default

__all__ = [
    "Connections",
    "HttpEndpoints",
    "HttpServer",
    "ListenError",
    "close_server",
    "http_address",
    "listen_error",
    "shares_websocket_port",
    "standalone_http_server",
]

logger = logging.getLogger(__name__)

ABORT_MARGIN = 0.25
"""Seconds before its deadline that a closing server aborts the connections still open."""


class ListenError(GatewayError):
    """A server cannot listen where it was told to."""


def listen_error(what: str, host: str, port: int, exc: OSError, keys: str) -> ListenError:
    """The error of server ``what`` that cannot listen on ``host:port``, saying which
    option or keys (``keys``: ``"--port or [websocket] port"``) choose another port."""
    reason = os_error_reason(exc)
    if exc.errno == errno.EADDRINUSE:
        hint = f"choose another port with {keys}"
    else:
        hint = f"check the host and port ({keys})"
    return ListenError(f"{what}: cannot listen on {host}:{port}: {reason}; {hint}")


class HttpEndpoints:
    """``GET /healthz`` and ``GET /readyz`` (their callbacks' status and JSON body; without
    a readiness callback, ``/readyz`` answers as ``/healthz``), ``GET /metrics``
    (Prometheus text), 404 for any other path, 405 for any other method."""

    def __init__(
        self,
        *,
        health: Callable[[], tuple[int, dict[str, Any]]],
        metrics: GatewayMetrics,
        readiness: Callable[[], tuple[int, dict[str, Any]]] | None = None,
    ) -> None:
        self._health = health
        self._readiness = readiness or health
        self._metrics = metrics

    def respond(self, request: Request) -> Response:
        """The response to ``request``."""
        path = urlsplit(request.path).path
        if request.method != "GET":
            return response(
                http.HTTPStatus.METHOD_NOT_ALLOWED, f"method {request.method} not allowed\n"
            )
        if path in ("/healthz", "/readyz"):
            status, body = (self._health if path == "/healthz" else self._readiness)()
            return response(status, orjson.dumps(body, default=json_default), "application/json")
        if path == "/metrics":
            return response(http.HTTPStatus.OK, self._metrics.render(), CONTENT_TYPE)
        return response(
            http.HTTPStatus.NOT_FOUND,
            f"no such path {path!r}: try /healthz, /readyz, /metrics or a websocket upgrade\n",
        )


def response(
    status: int, body: bytes | str, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    """A plain HTTP response that closes the connection."""
    data = body.encode() if isinstance(body, str) else body
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(data))),
            ("Content-Type", content_type),
        ]
    )
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return Response(status, phrase, headers, data)


def http_address(config: GatewayConfig) -> tuple[str, int]:
    """``[http] host`` and ``port``, each the WebSocket server's when not set."""
    http_config, websocket = config.http, config.websocket
    host = websocket.host if http_config.host is None else http_config.host
    port = websocket.port if http_config.port is None else http_config.port
    return host, port


def shares_websocket_port(config: GatewayConfig) -> bool:
    """Whether the WebSocket server answers ``/healthz`` and ``/metrics``: both are on and
    the HTTP endpoints listen on its host and port."""
    websocket = config.websocket
    return (
        config.http.enabled
        and websocket.enabled
        and http_address(config) == (websocket.host, websocket.port)
    )


class HttpServer:
    """A server that answers every request with :class:`HttpEndpoints`, on ``host:port``.

    Call :meth:`start`, and :meth:`close` at shutdown.
    """

    def __init__(self, *, host: str, port: int, endpoints: HttpEndpoints) -> None:
        self.host = host
        self._port = port
        self._endpoints = endpoints
        self._server: Server | None = None
        self._connections = Connections()

    async def start(self) -> None:
        """Bind and start answering (see :attr:`port` when the port is 0).

        Raise :class:`ListenError` (one line, with the reason) if the address is taken.
        """
        try:
            self._server = await serve(
                _never_upgraded,
                self.host,
                self._port,
                process_request=self._respond,
                create_connection=self._connections.connection_class,
            )
        except OSError as exc:
            raise listen_error("http", self.host, self._port, exc, "[http] port") from exc
        logger.info("http server listening on %s:%d", self.host, self.port)

    def _respond(self, connection: ServerConnection, request: Request) -> Response:
        return self._endpoints.respond(request)

    @property
    def port(self) -> int:
        """The port listened on: the real one when the configured port is 0."""
        if self._server is not None:
            for sock in self._server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the http server is not started")

    async def close(self, deadline: float | None = None) -> None:
        """Stop listening and wait for the requests in progress, returning by ``deadline``
        (event loop time; None: as long as they take)."""
        if self._server is None:
            return
        aborted = await close_server(self._server, self._connections, deadline)
        if aborted:
            logger.warning("http server closed: %d unfinished request(s) cut off", aborted)
        else:
            logger.info("http server closed")


async def _never_upgraded(connection: ServerConnection) -> None:
    """The handler of a server whose requests are all answered before any upgrade."""


def standalone_http_server(config: GatewayConfig, endpoints: HttpEndpoints) -> HttpServer | None:
    """The server of the HTTP endpoints, or None when ``[http]`` is off or the WebSocket
    server answers them (:func:`shares_websocket_port`)."""
    if not config.http.enabled or shares_websocket_port(config):
        return None
    host, port = http_address(config)
    return HttpServer(host=host, port=port, endpoints=endpoints)


class Connections:
    """The TCP connections of one websockets server from accept to loss, handshakes
    included, so that a shutdown can abort those still open at its deadline.

    Pass :attr:`connection_class` to ``serve(create_connection=...)``.
    """

    def __init__(self) -> None:
        transports: set[asyncio.Transport] = set()
        self._transports = transports

        class TrackedConnection(ServerConnection):
            _tracked: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                self._tracked = cast(asyncio.Transport, transport)
                transports.add(self._tracked)

            def connection_lost(self, exc: Exception | None) -> None:
                if self._tracked is not None:
                    transports.discard(self._tracked)
                super().connection_lost(exc)

        self.connection_class: type[ServerConnection] = TrackedConnection

    def abort(self) -> int:
        """Abort every connection still open; return how many."""
        transports = list(self._transports)
        for transport in transports:
            transport.abort()
        return len(transports)


async def close_server(
    server: Server,
    connections: Connections,
    deadline: float | None,
    *,
    aborting: Callable[[], None] | None = None,
) -> int:
    """Close ``server`` (stop listening, close WebSocket clients with 1001, wait for the
    handlers), returning by ``deadline`` (event loop time; None: no limit).

    :data:`ABORT_MARGIN` before the deadline, abort the connections still open (peers
    that did not close their end, or never finished a request) and call ``aborting``,
    so that the handlers end. Return how many connections were aborted.
    """
    server.close()
    if deadline is None:
        await server.wait_closed()
        return 0
    left = deadline - asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout_at(deadline - min(ABORT_MARGIN, max(left, 0.0) / 2)):
            await server.wait_closed()
    except TimeoutError:
        pass
    else:
        return 0
    aborted = connections.abort()
    if aborting is not None:
        aborting()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            await server.wait_closed()
    return aborted
