"""A simulated device: sensors, a telemetry schedule, and command handling. No I/O.

The runner (:mod:`fwsim.simulator`) asks each device what is due at a given simulated
time (:meth:`SimulatedDevice.poll`) and hands it the frames the gateway sent
(:meth:`SimulatedDevice.handle`); the device answers with :class:`Outgoing` messages,
which the runner encodes, sends and records.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from fwsim.sensors import Accelerometer, Battery, DriftingSensor
from fwsim.values import message_values
from protocol.catalog import Direction, MessageSpec
from protocol.events import ErrorKind, Frame, StreamError
from protocol.schema import Schema

__all__ = ["DEFAULT_INTERVALS", "NackReason", "Outgoing", "SimulatedDevice"]

ONCE = 0.0
"""An interval meaning: send once, at boot."""

DEFAULT_INTERVALS: dict[str, float] = {
    "heartbeat": 1.0,
    "environment": 1.0,
    "motion": 0.2,
    "power": 5.0,
    "event": 20.0,
    "identity": ONCE,
}
"""Seconds between messages of the default catalog; other telemetry: 1 s."""

RANDOM_INTERVAL = frozenset({"event"})

EVENTS = [("button", "button pressed"), ("threshold", "temp high"), ("threshold", "door open")]
"""Messages sent at random moments (exponential gaps of the mean interval)."""


class NackReason(IntEnum):
    """Why a command was refused (the ``reason`` enum of the catalog's ``nack``)."""

    UNKNOWN_COMMAND = 1
    BAD_LENGTH = 2
    BAD_VALUE = 3
    NOT_A_COMMAND = 4


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message the device sends: telemetry, or a response to ``reply_to``."""

    message: str
    fields: dict[str, Any]
    time: float
    """Simulated time the message is for: its slot in the schedule, or the command's arrival."""
    reply_to: int | None = None


@dataclass
class _Schedule:
    interval: float | None
    """Seconds between sends; None stops the message; ONCE sends it at boot only."""
    due: float


@dataclass
class SimulatedDevice:
    """One microcontroller with its sensors. Deterministic for a given ``seed``."""

    schema: Schema
    seed: int
    address: int | None = None
    intervals: Mapping[str, float | None] = field(default_factory=dict)
    """Seconds between messages by name, overriding DEFAULT_INTERVALS (None: never)."""
    boot_time: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        sensor_rng = random.Random(self.rng.getrandbits(64))
        self.temperature = DriftingSensor(sensor_rng, 21.0, 0.02, 600.0, 0.05, -40.0, 85.0)
        self.humidity = DriftingSensor(sensor_rng, 45.0, 0.05, 900.0, 0.2, 0.0, 100.0)
        self.pressure = DriftingSensor(sensor_rng, 1013.0, 0.01, 3600.0, 0.05, 870.0, 1085.0)
        self.battery = Battery(sensor_rng)
        self.accelerometer = Accelerometer(sensor_rng)
        self.resets = 0
        self.serial = self.rng.randbytes(6)
        self._last_step = self.boot_time
        self._elapsed = 0.0
        self._telemetry = {
            message.name: message
            for message in self.schema.catalog.messages
            if message.direction is Direction.TELEMETRY
        }
        unknown = sorted(set(self.intervals) - set(self._telemetry))
        if unknown:
            raise ValueError(f"no telemetry message called {', '.join(unknown)} in the catalog")
        self._schedules = {
            name: _Schedule(self._interval(name), self.boot_time) for name in self._telemetry
        }

    def _interval(self, name: str) -> float | None:
        if name in self.intervals:
            return self.intervals[name]
        return DEFAULT_INTERVALS.get(name, 1.0)

    def next_due(self) -> float | None:
        """Simulated time of the next scheduled message, or None if nothing is scheduled."""
        times = [s.due for s in self._schedules.values() if s.interval is not None]
        return min(times, default=None)

    def poll(self, now: float) -> list[Outgoing]:
        """Return every message due at or before ``now``, in time order, and reschedule.

        A message whose interval passed several times since the last poll is sent as
        many times, so the result does not depend on how often the caller polls.
        """
        outgoing: list[Outgoing] = []
        while True:
            due = [  # at equal times, what is sent once (identity, at boot) goes first
                (schedule.due, schedule.interval != ONCE, name)
                for name, schedule in self._schedules.items()
                if schedule.interval is not None and schedule.due <= now
            ]
            if not due:
                return outgoing
            when, _, name = min(due)
            self._step(when)
            outgoing.append(Outgoing(name, self._values(self._telemetry[name], when), when))
            self._reschedule(name, when)

    def skip(self, until: float) -> int:
        """Drop what falls due before ``until`` (a stalled device); return how many."""
        skipped = 0
        for name, schedule in self._schedules.items():
            while schedule.interval is not None and schedule.due < until:
                skipped += 1
                self._reschedule(name, schedule.due)
        return skipped

    def _reschedule(self, name: str, sent: float) -> None:
        schedule = self._schedules[name]
        if schedule.interval is None or schedule.interval == ONCE:
            schedule.interval = None
        elif name in RANDOM_INTERVAL:
            schedule.due = sent + self.rng.expovariate(1.0 / schedule.interval)
        else:
            schedule.due = sent + schedule.interval

    def _step(self, now: float) -> None:
        elapsed = max(0.0, now - self._last_step)
        self._last_step = max(self._last_step, now)
        self._elapsed = elapsed
        self.battery.step(elapsed)

    def readings(self, now: float) -> dict[str, Any]:
        """What the sensors say now, by the field names of the default catalog."""
        elapsed = self._elapsed
        code, text = self.rng.choice(EVENTS)
        return {
            "temperature": self.temperature.read(elapsed),
            "humidity": self.humidity.read(elapsed),
            "pressure": self.pressure.read(elapsed),
            "accel": self.accelerometer.read(),
            "battery": self.battery.voltage_mv(),
            "current": -self.battery.current_draw()
            if not self.battery.charging
            else self.battery.charge_ma,
            "charge": self.battery.charge,
            "uptime": int(now - self.boot_time),
            "state": "running",
            "flags": {
                "charging": self.battery.charging,
                "low_battery": self.battery.charge < 20.0,
                "sensor_fault": False,
                "link_quality": 3,
            },
            "resets": self.resets,
            "code": code,
            "text": text,
            "serial": self.serial,
            "firmware": [1, 4, 2],
            "model": "EnvNode-1",
        }

    def _values(self, message: MessageSpec, now: float) -> dict[str, Any]:
        return message_values(message, self.readings(now), self.rng)

    def handle(self, event: Frame | StreamError, now: float) -> list[Outgoing]:
        """Answer a frame the gateway sent; return the responses (none for other devices)."""
        if isinstance(event, StreamError):
            if event.kind is not ErrorKind.PAYLOAD_MISMATCH or event.cmd is None:
                return []
            return self._nack(0, event.cmd, NackReason.BAD_LENGTH, now)
        if self.address is not None and event.header.get("address") not in (self.address, None):
            return []
        spec = self.schema.messages.get(event.cmd)
        order = self.schema.catalog.byte_order
        request_id = int.from_bytes(event.payload[:2], order) if len(event.payload) >= 2 else 0
        if spec is None:
            return self._nack(request_id, event.cmd, NackReason.UNKNOWN_COMMAND, now)
        if spec.spec.direction is not Direction.COMMAND:
            return self._nack(request_id, event.cmd, NackReason.NOT_A_COMMAND, now)
        request_id = int(event.fields.get("request_id", request_id))
        match spec.spec.name:
            case "ping":
                uptime = int(now - self.boot_time)
                pong = {"request_id": request_id, "uptime": uptime}
                return [Outgoing("pong", pong, now, request_id)]
            case "set_rate":
                return self._set_rate(request_id, event.cmd, event.fields, now)
            case _:
                return self._nack(request_id, event.cmd, NackReason.UNKNOWN_COMMAND, now)

    def _set_rate(
        self, request_id: int, cmd: int, fields: Mapping[str, Any], now: float
    ) -> list[Outgoing]:
        target = int(fields["message"])
        interval_ms = int(fields["interval"])
        if target == 0:
            names = list(self._telemetry)
        else:
            message = self.schema.messages.get(target)
            if message is None or message.spec.name not in self._telemetry:
                return self._nack(request_id, cmd, NackReason.BAD_VALUE, now)
            names = [message.spec.name]
        for name in names:
            schedule = self._schedules[name]
            schedule.interval = interval_ms / 1000.0 if interval_ms else None
            if schedule.interval is not None:
                schedule.due = now + schedule.interval
        ack = {"request_id": request_id, "command": cmd, "value": interval_ms}
        return [Outgoing("ack", ack, now, request_id)]

    def _nack(self, request_id: int, cmd: int, reason: NackReason, now: float) -> list[Outgoing]:
        if "nack" not in self.schema.names:
            return []
        fields = {"request_id": request_id, "command": cmd, "reason": reason.name.lower()}
        return [Outgoing("nack", fields, now, request_id)]

    def boot(self, now: float) -> None:
        """(Re)start the device at ``now``: uptime and schedules start over."""
        self.boot_time = now
        self._last_step = now
        self._elapsed = 0.0
        for name, schedule in self._schedules.items():
            schedule.interval = self._interval(name)
            if schedule.interval in (None, ONCE) or name == "heartbeat":
                schedule.due = now  # identity and the first heartbeat right at boot
            elif name in RANDOM_INTERVAL:
                schedule.due = now + self.rng.expovariate(1.0 / schedule.interval)
            else:  # free-running timers, each with its own phase
                schedule.due = now + schedule.interval * self.rng.random()
