"""The gateway's plain HTTP endpoints: ``/healthz`` and ``/metrics``.

:class:`HttpEndpoints` answers a request that is not a WebSocket upgrade; whichever
server listens on the HTTP port (the WebSocket server, or a server of its own when
WebSocket is off or elsewhere) hands such requests to it.
"""

from __future__ import annotations

import email.utils
import http
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.runtime.metrics import CONTENT_TYPE, GatewayMetrics
from protocol.records import json_default

__all__ = ["HttpEndpoints"]


class HttpEndpoints:
    """``GET /healthz`` (the health callback's status and JSON body), ``GET /metrics``
    (Prometheus text), 404 for any other path, 405 for any other method."""

    def __init__(
        self, *, health: Callable[[], tuple[int, dict[str, Any]]], metrics: GatewayMetrics
    ) -> None:
        self._health = health
        self._metrics = metrics

    def respond(self, request: Request) -> Response:
        """The response to ``request``."""
        path = urlsplit(request.path).path
        if request.method != "GET":
            return response(
                http.HTTPStatus.METHOD_NOT_ALLOWED, f"method {request.method} not allowed\n"
            )
        if path == "/healthz":
            status, body = self._health()
            return response(status, orjson.dumps(body, default=json_default), "application/json")
        if path == "/metrics":
            return response(http.HTTPStatus.OK, self._metrics.render(), CONTENT_TYPE)
        return response(
            http.HTTPStatus.NOT_FOUND,
            f"no such path {path!r}: try /healthz, /metrics or a websocket upgrade\n",
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
