"""The WebSocket output: dashboards subscribe to decoded messages and send commands.

:func:`build` makes it from the gateway's configuration. The package's modules, each
one job: ``auth`` (tokens and roles), ``ratelimit`` (token bucket), ``client_protocol``
(the JSON protocol, without I/O), ``hub`` (fan-out to subscribers' bounded buffers),
``internals`` (the fast writes below websockets' public API), ``server`` (the I/O),
``output`` (what the gateway sees). docs/websocket.md is the client protocol.
"""

from gateway.outputs.websocket.output import WebSocketOutput, build

__all__ = ["WebSocketOutput", "build"]
