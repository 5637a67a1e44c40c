"""The simulator's runtime: drives devices in (real or simulated) time, writes to a link.

Time is simulated seconds since start. In real time the runner sleeps until the next
message is due (and paces bytes at the baud rate, if one is given); otherwise it jumps
from one due time to the next, which turns ``--duration 3600`` into an hour of
telemetry written as fast as the disk takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fwsim.device import Outgoing, SimulatedDevice
from fwsim.faults import FaultKind, FaultRates, Schedule, inject
from fwsim.links import DataCallback, Link, LinkDown
from fwsim.truth import TruthWriter
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import Event
from protocol.profile import HeaderRole
from protocol.schema import Schema

__all__ = ["RunOptions", "RunSummary", "Simulator"]

logger = logging.getLogger(__name__)

DRAIN_TIMEOUT = 5.0
"""Seconds to wait at the end of a run for the reader to take what was sent."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How long and how fast to run, and what to break."""

    count: int | None = None
    """Stop after this many frames (duplicates not counted)."""
    duration: float | None = None
    """Stop after this many simulated seconds."""
    realtime: bool = True
    baud: int | None = None
    """Pace bytes as a UART at this baud rate would (8N1: baud / 10 bytes per second)."""
    faults: FaultRates = field(default_factory=FaultRates)
    stall: Schedule | None = None
    disconnect: Schedule | None = None
    seed: int = 0


@dataclass
class RunSummary:
    """What a run did."""

    frames: int = 0
    bytes: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    commands: int = 0


class Simulator:
    """Run ``devices`` on a link made by ``make_link(on_data)``; call :meth:`run`."""

    def __init__(
        self,
        schema: Schema,
        devices: list[SimulatedDevice],
        make_link: Callable[[DataCallback], Link],
        options: RunOptions,
        truth: TruthWriter,
        *,
        announce: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.schema = schema
        self.devices = devices
        self.options = options
        self.truth = truth
        self.summary = RunSummary()
        self.link = make_link(self._received)
        self._announce = announce
        self._encoder = FrameEncoder(schema)
        self._commands = StreamDecoder(schema)
        self._inbox: list[Event] = []
        self._wake = asyncio.Event()
        self._rng = random.Random(options.seed ^ 0x5EED)
        self._checksum_width = schema.profile.checksum.width
        self._header_size = schema.profile.header_size
        sequence = schema.profile.field(HeaderRole.SEQUENCE)
        self._sequence_modulo = 1 << (8 * sequence.width) if sequence is not None else None
        self._sequences = [0] * len(devices)
        self._start = 0.0
        self._next_write = 0.0
        self._stop = asyncio.Event()
        self._finish = asyncio.Event()

    def _received(self, data: bytes) -> None:
        self._inbox.extend(self._commands.feed(data))
        self._wake.set()

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the frame it is sending."""
        self._stop.set()
        self._wake.set()

    def finish(self) -> None:
        """Ask :meth:`run` to end as a count or a duration ends it: after the frame it is
        sending, once the reader has taken what was sent (waiting DRAIN_TIMEOUT at most)."""
        self._finish.set()
        self._wake.set()

    def _now(self, virtual: float) -> float:
        if not self.options.realtime:
            return virtual
        return asyncio.get_running_loop().time() - self._start

    async def run(self) -> RunSummary:
        """Open the link, run until count, duration, :meth:`finish` or :meth:`stop`, close
        the link."""
        await self.link.open()
        self._announce(self.link.description)
        self._start = asyncio.get_running_loop().time()
        for device in self.devices:
            device.boot(0.0)
        now = 0.0
        try:
            while not self._finished(now):
                await self._answer_commands(now)
                now = await self._apply_windows(now)
                due = self._next_due(now)
                if due is None:
                    break
                if due > now:
                    now = await self._wait_until(due)
                    continue
                for index, device in enumerate(self.devices):
                    for outgoing in device.poll(now):
                        await self._send(index, outgoing, now)
                        if self._finished(now):
                            break
            if not self._stop.is_set() and not await self.link.drain(DRAIN_TIMEOUT):
                logger.warning("closing %s with bytes nobody read", self.link.description)
        finally:
            await self.link.close()
            self.truth.close()
        return self.summary

    def _finished(self, now: float) -> bool:
        options = self.options
        return (
            self._stop.is_set()
            or self._finish.is_set()
            or (options.count is not None and self.summary.frames >= options.count)
            or (options.duration is not None and now >= options.duration)
        )

    def _next_due(self, now: float) -> float | None:
        candidates = [device.next_due() for device in self.devices]
        times = [due for due in candidates if due is not None]
        for schedule in (self.options.stall, self.options.disconnect):
            if schedule is not None:
                times.append(schedule.next_start(now))
        if self.options.duration is not None:
            times.append(self.options.duration)
        return min(times, default=None)

    async def _wait_until(self, due: float) -> float:
        if not self.options.realtime:
            return due
        timeout = due - self._now(0.0)
        if timeout > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        return self._now(0.0)

    async def _apply_windows(self, now: float) -> float:
        """Enter a stall or a disconnect window when one opens; return the time after it."""
        for kind, schedule in (
            (FaultKind.STALL, self.options.stall),
            (FaultKind.DISCONNECT, self.options.disconnect),
        ):
            window = schedule.window_at(now) if schedule is not None else None
            if window is None:
                continue
            start, end = window
            if kind is FaultKind.DISCONNECT:
                logger.info("link going away for %.1f s", end - now)
                await self.link.disconnect()
            skipped = sum(device.skip(end) for device in self.devices)
            self.truth.write(
                {
                    "type": "fault",
                    "kind": kind.value,
                    "time": start,
                    "duration": end - start,
                    "offset": self.summary.bytes,
                    "skipped": skipped,
                }
            )
            self.summary.faults[kind.value] += 1
            while now < end and not self._stop.is_set():
                now = await self._wait_until(end)
            if kind is FaultKind.DISCONNECT:
                await self.link.reconnect()
                logger.info("link back on %s", self.link.description)
            self._inbox.clear()
        return now

    async def _answer_commands(self, now: float) -> None:
        inbox, self._inbox = self._inbox, []
        for event in inbox:
            self.summary.commands += 1
            for index, device in enumerate(self.devices):
                for outgoing in device.handle(event, now):
                    await self._send(index, outgoing, now)

    async def _send(self, index: int, outgoing: Outgoing, now: float) -> None:
        device = self.devices[index]
        header: dict[str, int] = {}
        if self._sequence_modulo is not None:
            header["sequence"] = self._sequences[index]
            self._sequences[index] = (header["sequence"] + 1) % self._sequence_modulo
        if device.address is not None:
            header["address"] = device.address
        frame = self._encoder.encode(outgoing.message, outgoing.fields, header=header)
        message = self.schema.names[outgoing.message]
        record: dict[str, Any] = {
            "type": "frame",
            "time": round(outgoing.time, 6),
            "device": index,
            "address": device.address,
            "sequence": header.get("sequence"),
            "cmd": message.spec.cmd,
            "message": outgoing.message,
            "fields": message.decoder()(frame, self._header_size),  # as encoded, quantised
            "raw": frame,
            "reply_to": outgoing.reply_to,
        }
        for piece in inject(frame, self.options.faults, self._checksum_width, self._rng):
            offset = self.summary.bytes
            try:
                await self._write(piece.data)
            except LinkDown:
                self.summary.faults["lost_while_down"] += 1
                return
            if piece.kind is not None:
                self.summary.faults[piece.kind.value] += 1
            if piece.is_frame:
                extra = {"sent": piece.data} if piece.data != frame else {}
                fault = None if piece.kind is None else piece.kind.value
                self.truth.write(
                    {**record, "offset": offset, "size": len(piece.data), "fault": fault, **extra}
                )
            else:
                self.truth.write(
                    {
                        "type": "fault",
                        "kind": piece.kind.value if piece.kind else None,
                        "time": round(now, 6),
                        "offset": offset,
                        "size": len(piece.data),
                    }
                )
        self.summary.frames += 1

    async def _write(self, data: bytes) -> None:
        baud = self.options.baud
        if baud and self.options.realtime:
            loop = asyncio.get_running_loop()
            delay = self._next_write - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._next_write = max(self._next_write, loop.time()) + len(data) * 10 / baud
        await self.link.write(data)
        self.summary.bytes += len(data)
