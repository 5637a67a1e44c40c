"""Running a :class:`Gateway` in the foreground until SIGINT or SIGTERM: ``tgw run``,
``tgw demo`` and ``tgw replay`` all do it this way."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

from gateway.runtime.gateway import Gateway

__all__ = ["serve"]


async def serve(
    gateway: Gateway,
    *extra: tuple[str, Coroutine[Any, Any, object]],
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``gateway`` until SIGINT, SIGTERM or ``stop``, with ``extra`` (name, coroutine)
    tasks that live as long as it does."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with asyncio.TaskGroup() as tasks:
        companions = [tasks.create_task(coroutine, name=name) for name, coroutine in extra]
        await gateway.run(stop)
        for companion in companions:  # they live as long as the gateway
            companion.cancel()
