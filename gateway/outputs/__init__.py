"""Where decoded messages go: WebSocket clients, an MQTT broker, a JSON-lines file. Each
output implements :class:`gateway.runtime.output.Output` and is listed, by its factory,
in :mod:`gateway.outputs.registry`. Outputs import the runtime, never a command."""
