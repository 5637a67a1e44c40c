"""/healthz and /metrics over real sockets: on the WebSocket port, or on a server of their own.

``[http]`` decides where they listen; the WebSocket server answers them only when it
listens there itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from gateway.config import GatewayConfig, HttpConfig, WebSocketConfig
from gateway.outputs.registry import OUTPUTS
from gateway.outputs.websocket import WebSocketOutput, build
from gateway.runtime.gateway import Gateway
from gateway.runtime.http import (
    HttpEndpoints,
    ListenError,
    http_address,
    shares_websocket_port,
    standalone_http_server,
)
from gateway.runtime.journal import Journal
from gateway.runtime.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.runtime.output import OutputContext
from protocol.errors import GatewayError
from tests.gateway.broker import free_port

GUARD = 10.0


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def guarded() -> None:
        async with asyncio.timeout(GUARD):
            await main()

    asyncio.run(guarded())


def endpoints(metrics: GatewayMetrics) -> HttpEndpoints:
    return HttpEndpoints(health=lambda: (200, {"status": "ok"}), metrics=metrics)


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from 127.0.0.1:``port``: status, headers (lower-case names), body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_with_websocket_off_healthz_and_metrics_answer_on_the_http_port() -> None:
    async def main() -> None:
        config = GatewayConfig(websocket=WebSocketConfig(enabled=False, port=0))
        metrics = GatewayMetrics()
        metrics.commands.labels(device="node-1", result="sent").inc()
        server = standalone_http_server(config, endpoints(metrics))
        assert server is not None
        await server.start()
        try:
            status, headers, body = await get(server.port, "/healthz")
            assert (status, headers["content-type"]) == (200, "application/json")
            assert orjson.loads(body) == {"status": "ok"}
            status, headers, body = await get(server.port, "/metrics")
            assert (status, headers["content-type"]) == (200, CONTENT_TYPE)
            sample = 'tgw_commands_total{device="node-1",result="sent"} 1.0'
            assert sample in body.decode().splitlines()
            status, _, body = await get(server.port, "/nothing")
            assert status == 404
            assert "/nothing" in body.decode()
        finally:
            await server.close()

    run(main)


def test_the_http_port_defaults_to_the_websocket_servers() -> None:
    websocket = WebSocketConfig(host="0.0.0.0", port=9000)
    assert http_address(GatewayConfig(websocket=websocket)) == ("0.0.0.0", 9000)
    http = HttpConfig(port=9100)
    assert http_address(GatewayConfig(websocket=websocket, http=http)) == ("0.0.0.0", 9100)
    http = HttpConfig(host="127.0.0.1")
    assert http_address(GatewayConfig(websocket=websocket, http=http)) == ("127.0.0.1", 9000)


@pytest.mark.parametrize(
    ("websocket", "http", "shared", "standalone"),
    [
        (WebSocketConfig(), HttpConfig(), True, False),
        (WebSocketConfig(port=9000), HttpConfig(port=9000), True, False),
        (WebSocketConfig(), HttpConfig(port=9100), False, True),
        (WebSocketConfig(), HttpConfig(host="0.0.0.0"), False, True),
        (WebSocketConfig(enabled=False), HttpConfig(), False, True),
        (WebSocketConfig(), HttpConfig(enabled=False), False, False),
        (WebSocketConfig(enabled=False), HttpConfig(enabled=False), False, False),
    ],
)
def test_who_answers_http(
    websocket: WebSocketConfig, http: HttpConfig, shared: bool, standalone: bool
) -> None:
    config = GatewayConfig(websocket=websocket, http=http)
    assert shares_websocket_port(config) is shared
    server = standalone_http_server(config, endpoints(GatewayMetrics()))
    assert (server is not None) is standalone


def test_http_on_a_port_of_its_own_beside_websocket() -> None:
    async def main() -> None:
        config = GatewayConfig(
            websocket=WebSocketConfig(host="127.0.0.1", port=0),
            http=HttpConfig(port=free_port()),
        )
        metrics = GatewayMetrics()
        http = endpoints(metrics)
        output = build(
            OutputContext(
                config=config,
                metrics=metrics,
                journal=Journal(history=10),
                http=http,
                schemas={},
                hello=lambda: {"type": "hello"},
                commands=NoCommands(),
            )
        )
        assert isinstance(output, WebSocketOutput)
        server = standalone_http_server(config, http)
        assert server is not None
        await output.start()
        await server.start()
        try:
            assert (await get(server.port, "/healthz"))[0] == 200
            status, _, body = await get(output.server.port, "/healthz")
            assert status == 426  # upgrade required: this port is WebSocket only
            assert "[http]" in body.decode()
        finally:
            deadline = asyncio.get_running_loop().time() + GUARD
            await output.close(deadline)
            await server.close(deadline)

    run(main)


def test_a_taken_http_port_says_how_to_choose_another() -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            config = GatewayConfig(websocket=WebSocketConfig(enabled=False, port=port))
            server = standalone_http_server(config, endpoints(GatewayMetrics()))
            assert server is not None
            with pytest.raises(ListenError) as error:
                await server.start()
        assert str(error.value) == (
            f"http: cannot listen on 127.0.0.1:{port}: address already in use; "
            "choose another port with [http] port"
        )

    run(main)


def test_close_returns_by_its_deadline_with_a_request_never_finished() -> None:
    async def main() -> None:
        config = GatewayConfig(websocket=WebSocketConfig(enabled=False, port=0))
        server = standalone_http_server(config, endpoints(GatewayMetrics()))
        assert server is not None
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        await server.close(deadline)
        assert loop.time() < deadline + 5  # not the 10 s websockets would wait
        assert await reader.read() == b""
        writer.close()

    run(main)


class NoCommands:
    async def send_command(self, device: str, message: str, fields: dict[str, Any]) -> None:
        raise GatewayError("no devices")


def test_an_http_port_taken_closes_the_outputs_already_started() -> None:
    """The WebSocket output starts, then the HTTP server cannot listen: the gateway stops
    with the error and leaves no port open behind it."""

    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config = GatewayConfig(
                websocket=WebSocketConfig(port=(port := free_port())),
                http=HttpConfig(port=taken.getsockname()[1]),
            )
            gateway = Gateway(config, OUTPUTS)
            [output] = gateway.outputs
            assert isinstance(output, WebSocketOutput)
            with pytest.raises(GatewayError, match="choose another port with"):
                await gateway.run(asyncio.Event())
            with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
                await asyncio.open_connection("127.0.0.1", port)

    run(main)
