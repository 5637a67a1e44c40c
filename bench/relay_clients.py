"""The client side of the relay benchmark's fan-out part (started by bench/relay.py).

    python bench/relay_clients.py --port P --connections N --expect-bytes B [--subscribe]

Opens N raw TCP connections, does each WebSocket handshake by hand, with
``--subscribe`` sends ``{"type":"subscribe","filters":["#"]}`` in a masked text frame
and waits for the ``subscribed`` reply, then only counts the bytes each connection
receives (no parsing). Control channel (stdout is only for these lines):

* it says ``READY <n>`` once all N are connected (and subscribed);
* then ``DONE <t_last> <t_first>`` once every connection has received exactly B
  bytes: the ``time.monotonic()`` at which the last and the first connection got
  their last byte;
* ``ERROR <text>`` if a connection fails, or receives more than B bytes, or when
  ``--timeout`` passes (with how far they got);
* end of input (or ``QUIT``): it closes the connections and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from relay_ws import (
    BenchError,
    RawSubscriber,
    open_raw_subscribers,
    raise_open_file_limit,
    say,
    stdin_reader,
)

SUBSCRIBE = b'{"type":"subscribe","filters":["#"]}'


async def run_clients(arguments: argparse.Namespace) -> None:
    raise_open_file_limit(arguments.connections + 100)
    expected = arguments.expect_bytes
    remaining = arguments.connections
    all_done = asyncio.Event()

    def reached(subscriber: RawSubscriber) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            all_done.set()

    subscribers = await open_raw_subscribers(
        arguments.host,
        arguments.port,
        arguments.connections,
        subscribe=SUBSCRIBE if arguments.subscribe else None,
        concurrency=arguments.concurrency,
        timeout=arguments.connect_timeout,
        on_target=reached,
    )
    for subscriber in subscribers:
        subscriber.arm(expected)
    control = await stdin_reader()
    say("READY", len(subscribers))

    async def report() -> None:
        finished = asyncio.create_task(all_done.wait())
        lost = [subscriber.lost for subscriber in subscribers]
        waiters: list[asyncio.Future[Any]] = [finished, *lost]
        await asyncio.wait(waiters, timeout=arguments.timeout, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            finished.cancel()
            got = sum(subscriber.received for subscriber in subscribers)
            complete = sum(1 for subscriber in subscribers if subscriber.reached_at is not None)
            gone = sum(1 for future in lost if future.done())
            why = f"{gone} connections closed by the server" if gone else "time ran out"
            say(
                "ERROR",
                f"{why}: {complete} of {len(subscribers)} connections had all their bytes "
                f"({got} of {expected * len(subscribers)} in all)",
            )
            return
        await asyncio.sleep(0.2)  # anything beyond the expected bytes would show now
        over = [s.received for s in subscribers if s.received > expected]
        if over:
            say("ERROR", f"{len(over)} connections got more than {expected} bytes: {over[:3]}")
            return
        times = [s.reached_at for s in subscribers if s.reached_at is not None]
        say("DONE", repr(max(times)), repr(min(times)))

    reporter = asyncio.create_task(report())
    try:
        while line := (await control.readline()).decode():
            if line.strip() == "QUIT":
                break
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        for subscriber in subscribers:
            subscriber.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description="The clients of the relay benchmark's fan-out part: speak to relay.py "
        "on stdin/stdout (see the module docstring)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument(
        "--expect-bytes", type=int, required=True, help="bytes each connection must receive"
    )
    parser.add_argument(
        "--subscribe", action="store_true", help='send {"type":"subscribe","filters":["#"]}'
    )
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes at a time")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for all the bytes"
    )
    arguments = parser.parse_args()
    try:
        asyncio.run(run_clients(arguments))
    except BenchError as exc:
        say("ERROR", exc)
        print(f"relay_clients: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
