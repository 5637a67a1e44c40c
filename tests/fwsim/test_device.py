"""The simulated device without I/O: schedules, sensors, commands."""

from __future__ import annotations

import itertools

from fwsim.device import DEFAULT_INTERVALS, Outgoing, SimulatedDevice
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import Frame, StreamError
from protocol.schema import Schema


def run_for(device: SimulatedDevice, seconds: float, step: float = 0.05) -> list[Outgoing]:
    sent: list[Outgoing] = []
    now = 0.0
    while now <= seconds:
        sent += device.poll(now)
        now = round(now + step, 6)
    return sent


def command(schema: Schema, name: str, fields: dict[str, int]) -> Frame:
    [event] = StreamDecoder(schema).feed(FrameEncoder(schema).encode(name, fields))
    assert isinstance(event, Frame)
    return event


def test_same_seed_same_telemetry(default_schema: Schema) -> None:
    first, second = SimulatedDevice(default_schema, seed=5), SimulatedDevice(default_schema, seed=5)
    first.boot(0.0)
    second.boot(0.0)
    assert run_for(first, 30.0) == run_for(second, 30.0)
    other = SimulatedDevice(default_schema, seed=6)
    other.boot(0.0)
    assert run_for(other, 30.0) != run_for(first, 30.0)


def test_messages_follow_their_intervals(default_schema: Schema) -> None:
    device = SimulatedDevice(default_schema, seed=1)
    device.boot(0.0)
    sent = run_for(device, 100.0, step=0.01)
    counts = {name: sum(o.message == name for o in sent) for name in DEFAULT_INTERVALS}
    assert counts["identity"] == 1
    assert counts["heartbeat"] == 101  # at boot, then every second through t = 100
    assert 500 - 1 <= counts["motion"] <= 500 + 1
    assert 20 - 1 <= counts["power"] <= 20 + 1
    assert 1 <= counts["event"] <= 20  # random moments, one every 20 s on average
    heartbeat_times = [o.time for o in sent if o.message == "heartbeat"]
    assert heartbeat_times == [float(t) for t in range(101)]
    assert sent[0].message == "identity"


def test_sensors_behave_like_sensors(default_schema: Schema) -> None:
    device = SimulatedDevice(default_schema, seed=2, intervals={"power": 60.0})
    device.boot(0.0)
    sent = run_for(device, 3600.0, step=1.0)
    temperatures = [o.fields["temperature"] for o in sent if o.message == "environment"]
    assert all(15.0 < t < 27.0 for t in temperatures)
    steps = [abs(b - a) for a, b in itertools.pairwise(temperatures)]
    assert max(steps) < 1.0  # drifts, does not jump
    assert len({round(t, 2) for t in temperatures}) > 100  # and is never flat
    charge = [o.fields["charge"] for o in sent if o.message == "power"]
    assert charge[-1] < charge[0]  # the battery drains
    uptimes = [o.fields["uptime"] for o in sent if o.message == "heartbeat"]
    assert uptimes == sorted(uptimes)
    assert uptimes[-1] == 3600
    accel = [o.fields["accel"] for o in sent if o.message == "motion"]
    mean_z = sum(z for _, _, z in accel) / len(accel)
    assert 0.95 < mean_z < 1.05  # gravity, give or take noise and the odd shake


def test_ping_is_answered_with_pong(default_schema: Schema) -> None:
    device = SimulatedDevice(default_schema, seed=1)
    device.boot(0.0)
    [reply] = device.handle(command(default_schema, "ping", {"request_id": 77}), 12.5)
    assert reply == Outgoing("pong", {"request_id": 77, "uptime": 12}, 12.5, reply_to=77)


def test_set_rate_changes_the_schedule_and_is_acknowledged(default_schema: Schema) -> None:
    device = SimulatedDevice(default_schema, seed=1)
    device.boot(0.0)
    run_for(device, 10.0)
    motion = default_schema.names["motion"].spec.cmd
    request = {"request_id": 9, "message": motion, "interval": 1500}
    [ack] = device.handle(command(default_schema, "set_rate", request), 10.0)
    assert ack.message == "ack"
    assert ack.fields == {"request_id": 9, "command": 0x82, "value": 1500}
    times = [o.time for o in run_for(device, 20.0) if o.message == "motion" and o.time > 10.0]
    assert times == [11.5, 13.0, 14.5, 16.0, 17.5, 19.0]


def test_set_rate_zero_stops_a_message(default_schema: Schema) -> None:
    device = SimulatedDevice(default_schema, seed=1)
    device.boot(0.0)
    request = {"request_id": 1, "message": 0, "interval": 0}  # 0: every message
    [ack] = device.handle(command(default_schema, "set_rate", request), 0.0)
    assert ack.message == "ack"
    assert device.next_due() is None


def test_bad_commands_are_refused_with_a_reason(default_schema: Schema) -> None:
    device = SimulatedDevice(default_schema, seed=1)
    device.boot(0.0)
    encoder = FrameEncoder(default_schema)
    unknown = StreamDecoder(default_schema).feed(encoder.encode_raw(0x99, b"\x05\x00\xff"))
    [nack] = device.handle(unknown[0], 1.0)
    assert nack.fields == {"request_id": 5, "command": 0x99, "reason": "unknown_command"}
    bad_target = {"request_id": 6, "message": 0x80, "interval": 100}  # ping is not telemetry
    [nack] = device.handle(command(default_schema, "set_rate", bad_target), 1.0)
    assert nack.fields == {"request_id": 6, "command": 0x82, "reason": "bad_value"}
    telemetry = command(default_schema, "power", {"battery": 1, "current": 2, "charge": 3})
    [nack] = device.handle(telemetry, 1.0)
    assert nack.fields["reason"] == "not_a_command"
    short = encoder.encode_raw(0x82, b"\x07\x00")  # set_rate with 2 of its 8 payload bytes
    mismatch = StreamDecoder(default_schema).feed(short)[0]
    assert isinstance(mismatch, StreamError)
    [nack] = device.handle(mismatch, 1.0)
    assert nack.fields == {"request_id": 0, "command": 0x82, "reason": "bad_length"}


def test_a_device_answers_only_its_own_address(crc_schema: Schema) -> None:
    device = SimulatedDevice(crc_schema, seed=1, address=2)
    device.boot(0.0)
    encoder = FrameEncoder(crc_schema)
    for address, answered in ((1, False), (2, True)):
        frame = encoder.encode(
            "ping", {"request_id": 3}, header={"sequence": 0, "address": address}
        )
        [event] = StreamDecoder(crc_schema).feed(frame)
        assert bool(device.handle(event, 0.0)) is answered


def test_stall_skips_what_falls_due(default_schema: Schema) -> None:
    device = SimulatedDevice(default_schema, seed=1, intervals={"motion": None, "event": None})
    device.boot(0.0)
    device.poll(0.0)
    skipped = device.skip(10.0)
    assert skipped > 0
    assert all(o.time >= 10.0 for o in device.poll(12.0))
