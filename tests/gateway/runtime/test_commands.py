"""Commands through the gateway: encoded with the device's schema, written to its link,
counted by device and result whichever output asked."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import GatewayConfig, TcpSourceConfig
from gateway.runtime.gateway import Gateway
from protocol.decoder import StreamDecoder
from protocol.errors import GatewayError
from protocol.events import Frame
from tests.gateway.test_gateway import GUARD


def test_commands_reach_the_device_and_are_counted() -> None:
    async def main() -> None:
        received = asyncio.Queue[bytes]()
        connected = asyncio.Event()

        async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connected.set()
            while data := await reader.read(1024):
                received.put_nowait(data)
            writer.close()

        server = await asyncio.start_server(device, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        source = TcpSourceConfig(device="node-1", host="127.0.0.1", port=port)
        gateway = Gateway(GatewayConfig(sources=(source,)), ())
        stop = asyncio.Event()
        async with server, asyncio.timeout(GUARD), asyncio.TaskGroup() as tasks:
            tasks.create_task(gateway.run(stop))
            await connected.wait()
            while not gateway.sources["node-1"].state()["connected"]:
                await asyncio.sleep(0.01)
            await gateway.send_command("node-1", "ping", {"request_id": 7})
            data = await received.get()
            with pytest.raises(GatewayError, match="no device 'node-9'"):
                await gateway.send_command("node-9", "ping", {"request_id": 8})
            with pytest.raises(GatewayError, match="'environment' is not a command"):
                await gateway.send_command("node-1", "environment", {})
            stop.set()
        [frame] = StreamDecoder(gateway.schemas["node-1"]).feed(data)
        assert isinstance(frame, Frame)
        assert (frame.message, frame.fields) == ("ping", {"request_id": 7})

        def count(device: str, result: str) -> float | None:
            labels = {"device": device, "result": result}
            return gateway.metrics.registry.get_sample_value("tgw_commands_total", labels)

        assert count("node-1", "sent") == 1
        assert count("node-1", "failed") == 1
        assert count("unknown", "failed") == 1  # a client cannot make up device labels
        assert count("node-9", "failed") is None

    asyncio.run(main())
