"""The device session, without a link or a clock: bytes and hand-made times in, events out.

Each scenario is a table of steps, each a call and the events it must return, written
``"power"`` for the envelope of a power frame, ``"+connected"`` for the device going
online and ``"-silent for 2 s"`` for it going offline (with the reason).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.runtime.envelope import Envelope
from gateway.runtime.metrics import GatewayMetrics
from gateway.runtime.session import (
    END_OF_REPLAY,
    STOPPED,
    DeviceSession,
    LinkState,
    SessionEvent,
)
from gateway.runtime.status import DeviceStatus
from protocol.schema import Schema

DEVICE = "node-1"
SILENCE = 2.0
T0 = 1_700_000_000.0
"""Unix time at ``now`` 0: the envelopes' and statuses' stamps are ``T0 + now``."""

# Default profile: AA 55 | cmd | len u16le | payload | sum8 of everything before it.
POWER = bytes.fromhex("AA 55 12 05 00  74 0E  FB FF  5A  EC")
"""power: battery 3700, current -5, charge 90."""
HEARTBEAT = bytes.fromhex("AA 55 01 08 00  05 00 00 00  01  19  02 00  29")
"""heartbeat: uptime 5, running, charging, link quality 3, 2 resets."""
BAD_CHECKSUM = POWER[:-1] + b"\xed"
GARBAGE = b"\x00\x01\x02"


@dataclass(frozen=True)
class Step:
    """One call: ``what`` is the method, ``now`` the session clock, ``data`` its argument."""

    what: str
    now: float = 0.0
    data: bytes | str = b""
    expect: tuple[str, ...] = ()


def receive(data: bytes, now: float, *expect: str) -> Step:
    return Step("receive", now, data, expect)


def tick(now: float, *expect: str) -> Step:
    return Step("tick", now, expect=expect)


def interrupted(now: float, *expect: str) -> Step:
    return Step("interrupted", now, expect=expect)


def link_lost(problem: str, *expect: str) -> Step:
    return Step("link_lost", data=problem, expect=expect)


def stopped(reason: str, *expect: str) -> Step:
    return Step("stopped", data=reason, expect=expect)


OPENED = Step("opened")


def make_session(
    schema: Schema, metrics: GatewayMetrics | None = None, **options: Any
) -> DeviceSession:
    return DeviceSession(
        DEVICE, schema, metrics or GatewayMetrics(), silence_timeout=SILENCE, **options
    )


def call(session: DeviceSession, step: Step) -> list[SessionEvent]:
    now, time = step.now, T0 + step.now
    match step.what:
        case "opened":
            session.opened()
            return []
        case "receive":
            assert isinstance(step.data, bytes)
            return session.receive(step.data, now=now, time=time)
        case "tick":
            return session.tick(now=now, time=time)
        case "interrupted":
            return session.interrupted(now=now, time=time)
        case "link_lost":
            assert isinstance(step.data, str)
            return session.link_lost(step.data, time=time)
        case "stopped":
            assert isinstance(step.data, str)
            return session.stopped(step.data, time=time)
    raise AssertionError(step.what)


def describe(event: SessionEvent) -> str:
    if isinstance(event, Envelope):
        return event.frame.message or "unknown"
    return ("+" if event.online else "-") + event.reason


SCENARIOS: dict[str, list[Step]] = {
    "the first frame after opening: connected": [
        OPENED,
        receive(POWER, 0.0, "+connected", "power"),
        receive(HEARTBEAT, 0.5, "heartbeat"),
    ],
    "a frame in pieces comes when it is whole": [
        OPENED,
        receive(POWER[:3], 0.0),
        receive(POWER[3:-1], 0.1),
        receive(POWER[-1:], 0.2, "+connected", "power"),
    ],
    "garbage, a bad checksum, then a frame": [
        OPENED,
        receive(GARBAGE + BAD_CHECKSUM, 0.0),
        receive(POWER, 0.1, "+connected", "power"),
    ],
    "silent after the timeout, receiving again with the next frame": [
        OPENED,
        receive(POWER, 0.0, "+connected", "power"),
        tick(1.9),
        tick(2.0, "-silent for 2 s"),
        tick(9.0),
        receive(HEARTBEAT, 9.5, "+receiving again", "heartbeat"),
    ],
    "every frame pushes the silence back": [
        OPENED,
        receive(POWER, 0.0, "+connected", "power"),
        receive(POWER, 1.5, "power"),
        tick(3.0),
        receive(GARBAGE, 3.4),  # bytes that make no frame do not count
        tick(3.5, "-silent for 2 s"),
    ],
    "no frame yet: never silent": [OPENED, receive(GARBAGE, 0.0), tick(100.0)],
    "a link lost, then reopened: connected again": [
        OPENED,
        receive(POWER, 0.0, "+connected", "power"),
        link_lost(
            "/dev/ttyUSB0 disappeared (hung up)", "-link lost: /dev/ttyUSB0 disappeared (hung up)"
        ),
        tick(5.0),
        OPENED,
        receive(POWER, 6.0, "+connected", "power"),
    ],
    "a link lost while silent: no second offline": [
        OPENED,
        receive(POWER, 0.0, "+connected", "power"),
        tick(2.5, "-silent for 2 s"),
        link_lost("gone"),
        OPENED,
        receive(POWER, 3.0, "+connected", "power"),
    ],
    "an interruption ends the frame in progress": [
        OPENED,
        receive(POWER, 0.0, "+connected", "power"),
        receive(HEARTBEAT[:6], 0.1),
        interrupted(0.2),
        receive(HEARTBEAT[6:], 0.3),  # the rest alone is no frame
        receive(POWER, 0.4, "power"),
    ],
    "an interruption finds a frame behind a false header": [
        OPENED,
        receive(b"\xaa\x55\x12\x40\x00" + POWER, 0.0),  # held: 64 bytes announced
        interrupted(0.5, "+connected", "power"),
    ],
    "stopped: offline once": [
        OPENED,
        receive(POWER, 0.0, "+connected", "power"),
        stopped(STOPPED, "-source stopped"),
        stopped(STOPPED),
    ],
    "end of replay while offline: nothing to say": [OPENED, stopped(END_OF_REPLAY)],
}


@pytest.mark.parametrize("steps", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_session_scenario(steps: list[Step], default_schema: Schema) -> None:
    session = make_session(default_schema)
    for index, step in enumerate(steps):
        got = tuple(describe(event) for event in call(session, step))
        assert got == step.expect, f"step {index}: {step}"


def test_events_carry_the_device_and_the_times_given(default_schema: Schema) -> None:
    session = make_session(default_schema, include_raw=True)
    status, envelope = session.receive(POWER, now=4.0, time=T0 + 4.0)
    assert status == DeviceStatus(DEVICE, True, "connected", T0 + 4.0)
    assert isinstance(envelope, Envelope)
    assert (envelope.device, envelope.received, envelope.seq) == (DEVICE, T0 + 4.0, 0)
    assert envelope.frame.fields == {"battery": 3700, "current": -5, "charge": 90}
    assert envelope.record()["raw"] == POWER.hex()
    assert session.last_frame == T0 + 4.0
    assert session.silence_deadline == 4.0 + SILENCE
    [offline] = session.tick(now=7.0, time=T0 + 7.5)
    assert offline == DeviceStatus(DEVICE, False, "silent for 2 s", T0 + 7.5)
    assert session.silence_deadline is None
    assert "raw" not in make_session(default_schema).receive(POWER, now=0, time=T0)[1].record()


def test_the_same_events_however_the_bytes_are_cut(default_schema: Schema) -> None:
    stream = GARBAGE + POWER + BAD_CHECKSUM + HEARTBEAT + POWER[:4] + GARBAGE + POWER
    rng = random.Random(9)

    def events(chunks: list[bytes]) -> list[str]:
        session = make_session(default_schema)
        got = [describe(e) for chunk in chunks for e in session.receive(chunk, now=0, time=T0)]
        return got + [describe(e) for e in session.interrupted(now=0, time=T0)]

    whole = events([stream])
    assert whole == ["+connected", "power", "heartbeat", "power"]
    assert events([stream[i : i + 1] for i in range(len(stream))]) == whole
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(stream)), 5))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert events(chunks) == whole


def test_metrics_count_what_the_session_saw(default_schema: Schema) -> None:
    metrics = GatewayMetrics()
    session = make_session(default_schema, metrics)

    def sample(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, {"device": DEVICE, **labels}) or 0.0

    assert metrics.registry.get_sample_value("tgw_device_online", {"device": DEVICE}) == 0
    stream = GARBAGE + POWER + BAD_CHECKSUM + HEARTBEAT + POWER
    session.receive(stream, now=0, time=T0)
    assert sample("tgw_device_online") == 1
    session.tick(now=SILENCE, time=T0 + SILENCE)
    assert sample("tgw_device_online") == 0
    statistics = session.statistics()
    assert sample("tgw_frames_total", message="power") == 2
    assert sample("tgw_frames_total", message="heartbeat") == 1
    assert sample("tgw_bytes_read_total") == statistics.bytes_fed == len(stream)
    assert sample("tgw_bytes_skipped_total") == statistics.bytes_skipped > 0
    for kind, count in statistics.errors.items():
        assert sample("tgw_decode_errors_total", kind=kind.value) == count
    record = session.record(LinkState(kind="tcp", where="h:1", connected=True, reconnects=2))
    assert record["decoder"]["frames"] == 3
    assert (record["device"], record["where"], record["reconnects"]) == (session.device, "h:1", 2)


def test_states_are_logged_once_per_change(
    default_schema: Schema, caplog: pytest.LogCaptureFixture
) -> None:
    session = make_session(default_schema, logger=logging.getLogger("tests.session"))
    with caplog.at_level("INFO", logger="tests.session"):
        session.receive(POWER + POWER, now=0, time=T0)
        session.tick(now=SILENCE, time=T0)
        session.tick(now=2 * SILENCE, time=T0)
        session.receive(POWER, now=10, time=T0)
        session.link_lost("gone", time=T0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "node-1: online (connected)"),
        ("WARNING", "node-1: offline (silent for 2 s)"),
        ("INFO", "node-1: online (receiving again)"),
        ("INFO", "node-1: offline (link lost: gone)"),
    ]


def test_a_silence_timeout_must_be_positive(default_schema: Schema) -> None:
    with pytest.raises(ValueError, match="silence timeout of 0 s, expected more than 0"):
        DeviceSession(DEVICE, default_schema, GatewayMetrics(), silence_timeout=0)
