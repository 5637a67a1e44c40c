"""The fault scenarios of issue 10: each runs the real parts, applies its fault, and
returns a :class:`~scripts.fault_suite.report.Result` with what it measured and the
guarantees it checked. Their settings' defaults are the full runs; CI passes short ones.

Frames are counted from the device's ground truth, from the first frame that arrived
on (what the device wrote before the gateway first opened the port is outside the run).
"Lost" is a frame the device wrote that no envelope carried.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.fault_suite.analysis import (
    Matching,
    Truth,
    classify_replug_losses,
    envelopes_in_state_file,
    match_frames,
    percentile,
    read_truth,
    reconnect_delays,
    tally_seqs,
)
from scripts.fault_suite.observers import Arrival, Record
from scripts.fault_suite.parts import copy_files
from scripts.fault_suite.report import Result
from scripts.fault_suite.rig import JOURNAL_FILE, OUTBOX_FILE, Common, DepthSampler, Rig

__all__ = [
    "SCENARIOS",
    "STATE_ERRORS",
    "BrokerOutage",
    "CorruptState",
    "DiskFull",
    "GatewayKill",
    "Replug",
    "RestartWhileAway",
    "Scenario",
]

STATE_ERRORS = "tgw_state_file_errors_total"
"""The metric that counts what the gateway could not keep in its state files, with the
labels ``file`` (``mqtt-outbox.sqlite``, ``journal.sqlite``) and ``kind``: ``write``
(a commit the disk refused) or ``unreadable`` (a file moved aside at start)."""


def _counted(result: Result, truth: Truth, matching: Matching, lost: Sequence[int]) -> None:
    first = matching.first if matching.first is not None else len(truth.frames)
    result.figure("frames sent (counted)", len(truth.frames) - first)
    result.figure("frames arrived", len(matching.arrived))
    result.figure("frames lost", len(lost))


def _seq_figures(result: Result, arrivals: Sequence[Arrival]) -> None:
    tally = tally_seqs(arrivals)
    result.figure("envelopes received (with duplicates)", tally.arrivals)
    result.figure("duplicates", tally.duplicates)
    result.figure("out of order", tally.out_of_order)
    result.figure("seq gaps", tally.gaps)
    result.check(
        "a seq names one message (duplicates carry the same seq and bytes)",
        tally.conflicting == 0,
        f"{tally.conflicting} seqs arrived with different messages",
    )
    result.check("0 out of order", tally.out_of_order == 0, f"{tally.out_of_order} out of order")


def _check_duplicates(result: Result, common: Common, duplicates: int) -> None:
    """Only what was in flight when the broker went away may arrive twice: the gateway's
    publishes not yet acknowledged, and the broker's deliveries to the subscriber."""
    bound = common.gateway_inflight() + common.broker_inflight
    result.check(
        "duplicates only for messages in flight at the cut",
        duplicates <= bound,
        f"{duplicates} duplicates, at most {common.gateway_inflight()} in flight "
        f"from the gateway + {common.broker_inflight} to the subscriber",
    )


@dataclass(frozen=True, slots=True)
class Return:
    """What arrived from a gateway started again at ``since`` (Unix time)."""

    relayed: int
    """Frames it read and relayed (not those of the outbox it inherited)."""
    lost: list[int]
    """Frames lost after the first one it relayed: lost while it was reading again."""


def _return(matching: Matching, lost: Sequence[int], since: float) -> Return:
    later = [index for index, arrival in matching.arrived.items() if arrival.time >= since]
    back = min(later, default=math.inf)
    return Return(len(later), [index for index in lost if index > back])


def _wait_return(rig: Rig, record: Record, since: float) -> None:
    """Wait (a while at most) until a frame the gateway started again read reaches
    ``record``: from then on the device sends its ``after`` seconds."""
    rig.wait_until(lambda: (last := record.last()) is not None and last.time >= since)


def _check_return(result: Result, back: Return) -> None:
    result.check(
        "the gateway started again relays again",
        back.relayed > 0,
        f"{back.relayed} frames read after its start",
    )
    result.check(
        "0 lost once the gateway is back", not back.lost, f"{len(back.lost)} lost after its return"
    )


def _not_arrived(kept: Sequence[bytes], arrivals: Sequence[Arrival]) -> int:
    payloads = {arrival.payload for arrival in arrivals}
    return sum(payload not in payloads for payload in kept)


def _finish(rig: Rig, record: Record) -> tuple[Truth, Matching, list[int]]:
    """Once the device has ended, wait for the drain; match what arrived to what was sent."""
    truth = read_truth(rig.device.truth)
    first = match_frames(truth.frames, record.arrivals()).first or 0
    rig.settle(record, len(truth.frames) - first)
    matching = match_frames(truth.frames, record.arrivals())
    return truth, matching, matching.missing(truth.frames)


@dataclass(frozen=True, slots=True)
class BrokerOutage:
    """The broker stopped for ``away`` s while the device sends, then started again; the
    device sends ``after`` s more."""

    warmup: float = 10.0
    away: float = 300.0
    after: float = 10.0

    name = "broker away"

    @property
    def seconds(self) -> float:
        """How long the device sends (on a machine that starts the gateway at once)."""
        return self.warmup + self.away + self.after

    def run(self, common: Common, workdir: Path) -> Result:
        result = Result(f"{self.name} {self.away:g} s at {common.rate:g} frames/s", workdir)
        queue = _queue_size(common, self.seconds)
        with Rig(workdir, common, duration=None, queue_size=queue) as rig:
            assert rig.broker is not None
            assert rig.counter is not None
            with DepthSampler(rig) as depths:
                rig.wait_first(rig.counter)
                rig.sleep_until(self.warmup)
                rig.broker.stop()
                rig.sleep_until(self.warmup + self.away)
                backlog = rig.outbox_depth()
                rig.broker.start()
                back = time.monotonic()
                rig.end_device(self.after)
                truth, matching, lost = _finish(rig, rig.counter)
            arrivals = rig.counter.arrivals()
            dropped = rig.gateway.metric("tgw_mqtt_dropped_total")
        _counted(result, truth, matching, lost)
        result.figure("backlog when the broker came back", backlog)
        caught_up = depths.caught_up(back, common.rate)
        result.figure(
            "seconds to catch up (under 1 s of frames queued)",
            caught_up if caught_up is not None else math.nan,
        )
        result.figure(
            "messages/s published while catching up",
            backlog / caught_up + common.rate if caught_up else math.nan,
        )
        _seq_figures(result, arrivals)
        result.check("0 lost", not lost and matching.foreign == 0, f"{len(lost)} lost")
        tally = tally_seqs(arrivals)
        result.check("every seq arrived", tally.gaps == 0, f"{tally.gaps} seqs missing")
        _check_duplicates(result, common, tally.duplicates)
        result.check("nothing dropped", dropped == 0, f"{dropped:g} dropped")
        return result


@dataclass(frozen=True, slots=True)
class GatewayKill:
    """The gateway killed (SIGKILL) mid-stream and started again ``down`` s later with the
    same state directory. The broker is away for the ``backlog`` s before the kill (0:
    not at all), so that the outbox holds messages the kill can lose; it comes back once
    the gateway is started again. The device sends ``after`` s more once the gateway
    relays again, however long it took to start."""

    warmup: float = 10.0
    backlog: float = 10.0
    down: float = 2.0
    after: float = 20.0

    name = "gateway SIGKILL"

    @property
    def seconds(self) -> float:
        """How long the device sends (on a machine that starts the gateway at once)."""
        return self.warmup + self.backlog + self.down + self.after

    def run(self, common: Common, workdir: Path) -> Result:
        title = f"{self.name}, broker away {self.backlog:g} s before, at {common.rate:g} frames/s"
        result = Result(title, workdir)
        queue = _queue_size(common, self.seconds)
        with Rig(workdir, common, duration=None, queue_size=queue) as rig:
            assert rig.broker is not None
            assert rig.counter is not None
            watcher = rig.watch_websocket()
            rig.wait_first(rig.counter)
            rig.sleep_until(self.warmup)
            if self.backlog:
                rig.broker.stop()
            rig.sleep_until(self.warmup + self.backlog)
            mark = rig.device.truth_mark()
            rig.gateway.kill()
            kept = envelopes_in_state_file(copy_files(rig.outbox_files, workdir / "killed"))
            seen = watcher.arrivals()
            rig.sleep_until(self.warmup + self.backlog + self.down)
            restarted = time.time()
            rig.start_gateway()
            if not rig.broker.running:
                rig.broker.start()
            _wait_return(rig, rig.counter, restarted)
            rig.end_device(self.after)
            truth, matching, lost = _finish(rig, rig.counter)
            arrivals = rig.counter.arrivals()
        _counted(result, truth, matching, lost)
        sent_before = rig.device.frames_before(mark)
        window = [index for index in lost if index < sent_before]
        back = _return(matching, lost, restarted)
        decoded = match_frames(truth.frames, seen).arrived
        uncommitted = sum(index in decoded for index in window)
        result.figure("kept in the outbox at the kill (committed, not acknowledged)", len(kept))
        result.figure("lost of what was sent before the kill", len(window))
        result.figure("  decoded, not committed (a WebSocket client had them)", uncommitted)
        result.figure("  that window, in ms of frames", uncommitted / common.rate * 1000)
        result.figure(
            "  not decoded (in the port, or lost while no gateway read it)",
            len(window) - uncommitted,
        )
        result.figure(
            "lost of what was sent while no gateway ran", len(lost) - len(window) - len(back.lost)
        )
        _seq_figures(result, arrivals)
        missing_kept = _not_arrived(kept, arrivals)
        result.check(
            "0 lost of what was committed",
            missing_kept == 0 and (len(kept) > 0 or not self.backlog),
            f"{missing_kept} of the {len(kept)} kept never arrived",
        )
        _check_return(result, back)
        return result


@dataclass(frozen=True, slots=True)
class RestartWhileAway:
    """The broker stopped for ``away`` s; meanwhile, ``restart_at`` s into it, the gateway
    is stopped (SIGTERM) and started again with the same state directory. The device
    sends ``after`` s more once the gateway relays again."""

    warmup: float = 10.0
    away: float = 60.0
    restart_at: float = 20.0
    after: float = 10.0

    name = "gateway restarted while the broker is away"

    @property
    def seconds(self) -> float:
        """How long the device sends (on a machine that starts the gateway at once)."""
        return self.warmup + self.away + self.after

    def run(self, common: Common, workdir: Path) -> Result:
        result = Result(f"{self.name}, {self.away:g} s at {common.rate:g} frames/s", workdir)
        queue = _queue_size(common, self.seconds)
        with Rig(workdir, common, duration=None, queue_size=queue) as rig:
            assert rig.broker is not None
            assert rig.counter is not None
            watcher = rig.watch_websocket()
            rig.wait_first(rig.counter)
            rig.sleep_until(self.warmup)
            rig.broker.stop()
            rig.sleep_until(self.warmup + self.restart_at)
            status = rig.gateway.terminate()
            kept = envelopes_in_state_file(copy_files(rig.outbox_files, workdir / "stopped"))
            seen = watcher.arrivals()
            restarted = time.time()
            rig.start_gateway()
            rig.sleep_until(self.warmup + self.away)
            rig.broker.start()
            _wait_return(rig, rig.counter, restarted)
            rig.end_device(self.after)
            truth, matching, lost = _finish(rig, rig.counter)
            arrivals = rig.counter.arrivals()
        _counted(result, truth, matching, lost)
        back = _return(matching, lost, restarted)
        result.figure("backlog kept at the stop", len(kept))
        result.figure("frames lost while no gateway ran", len(lost) - len(back.lost))
        _seq_figures(result, arrivals)
        result.check("a clean stop (exit status 0)", status == 0, f"exit status {status}")
        missing_kept = _not_arrived(kept, arrivals)
        result.check(
            "the backlog survives",
            missing_kept == 0 and len(kept) > 0,
            f"{missing_kept} of the {len(kept)} kept never arrived",
        )
        missing_seen = _not_arrived([arrival.payload for arrival in seen], arrivals)
        result.check(
            "nothing the stopped gateway relayed is lost",
            missing_seen == 0,
            f"{missing_seen} of the {len(seen)} a WebSocket client got never reached MQTT",
        )
        _check_duplicates(result, common, tally_seqs(arrivals).duplicates)
        _check_return(result, back)
        return result


def _log_says(lines: Sequence[str], *words: str) -> str | None:
    """The first WARNING or ERROR line of the log containing every one of ``words``."""
    return next(
        (
            line
            for line in lines
            if (" WARNING " in line or " ERROR " in line) and all(word in line for word in words)
        ),
        None,
    )


def _relayed(result: Result, what: str, truth: Truth, record: Record) -> None:
    matching = match_frames(truth.frames, record.arrivals())
    lost = matching.missing(truth.frames)
    first = matching.first if matching.first is not None else len(truth.frames)
    sent = len(truth.frames) - first
    result.figure(f"frames arrived by {what}", f"{len(matching.arrived):,} of {sent:,}")
    result.check(f"keeps relaying to {what}", sent > 0 and not lost, f"{len(lost)} lost")


@dataclass(frozen=True, slots=True)
class DiskFull:
    """The gateway may write files of ``limit`` bytes at most (RLIMIT_FSIZE, a disk full
    for it alone) while the device sends for ``duration`` s; the broker is away for the
    middle third of that, so the outbox has a backlog it cannot keep on disk."""

    duration: float = 30.0
    limit: int = 1 << 20

    name = "disk full"

    @property
    def seconds(self) -> float:
        """How long the device sends (on a machine that starts the gateway at once)."""
        return self.duration

    def run(self, common: Common, workdir: Path) -> Result:
        result = Result(f"{self.name} (files up to {self.limit:,} bytes)", workdir)
        queue = _queue_size(common, self.duration)
        with Rig(
            workdir, common, duration=self.duration, queue_size=queue, file_size_limit=self.limit
        ) as rig:
            assert rig.broker is not None
            assert rig.counter is not None
            watcher = rig.watch_websocket()
            rig.wait_first(watcher)
            rig.sleep_until(self.duration / 3)
            rig.broker.stop()
            rig.sleep_until(self.duration * 2 / 3)
            readiness, said_ready = rig.gateway.get("/readyz")
            rig.broker.start()
            rig.wait_device()
            truth = read_truth(rig.device.truth)
            first = match_frames(truth.frames, watcher.arrivals()).first or 0
            rig.settle(watcher, len(truth.frames) - first)
            rig.settle(rig.counter, len(truth.frames) - first)
            running = rig.gateway.running
            errors = rig.gateway.metric(STATE_ERRORS, kind="write")
            lines = rig.gateway.lines()
        _relayed(result, "WebSocket", truth, watcher)
        _relayed(result, "MQTT", truth, rig.counter)
        result.figure("WebSocket drops the gateway reported", watcher.dropped)
        result.check("the gateway keeps running", running, "running" if running else "exited")
        reasons = said_ready.decode(errors="replace")
        result.check(
            "/readyz says the outbox cannot write (while the broker is away)",
            readiness == 503 and "cannot write" in reasons,
            f"{readiness} {reasons}",
        )
        for name in (OUTBOX_FILE, JOURNAL_FILE):
            said = _log_says(lines, str(rig.state_dir / name))
            result.check(f"a warning names {name}", said is not None, said or "no such line")
        result.check(
            f"/metrics counts what it could not keep ({STATE_ERRORS})",
            errors > 0,
            f'{STATE_ERRORS}{{kind="write"}} = {errors:g}',
        )
        return result


GARBAGE = bytes(range(256)) * 16
"""What a corrupt state file holds: 4 KiB that are no SQLite database."""


@dataclass(frozen=True, slots=True)
class CorruptState:
    """Garbage in the gateway's state files (MQTT outbox and journal) before it starts."""

    duration: float = 10.0

    name = "corrupt state files"

    @property
    def seconds(self) -> float:
        """How long the device sends (on a machine that starts the gateway at once)."""
        return self.duration

    def run(self, common: Common, workdir: Path) -> Result:
        result = Result(self.name, workdir)
        rig = Rig(workdir, common, duration=self.duration)
        rig.state_dir.mkdir(parents=True, exist_ok=True)
        files = [rig.state_dir / OUTBOX_FILE, rig.state_dir / JOURNAL_FILE]
        for path in files:
            path.write_bytes(GARBAGE)
        with rig:
            assert rig.counter is not None
            watcher = rig.watch_websocket()
            rig.wait_first(watcher)
            rig.wait_device()
            truth = read_truth(rig.device.truth)
            first = match_frames(truth.frames, watcher.arrivals()).first or 0
            rig.settle(watcher, len(truth.frames) - first)
            rig.settle(rig.counter, len(truth.frames) - first)
            unreadable = rig.gateway.metric(STATE_ERRORS, kind="unreadable")
            lines = rig.gateway.lines()
        _relayed(result, "WebSocket", truth, watcher)
        _relayed(result, "MQTT", truth, rig.counter)
        for path in files:
            said = _log_says(lines, str(path), f"{path.name}.corrupt-")
            result.check(
                f"an error names {path.name} and where it went", said is not None, said or "no"
            )
            asides = sorted(path.parent.glob(f"{path.name}.corrupt-*"))
            kept = any(aside.read_bytes() == GARBAGE for aside in asides)
            result.check(
                f"{path.name} kept aside, not wiped",
                kept,
                ", ".join(aside.name for aside in asides) or "nothing next to it",
            )
        result.check(
            f"/metrics counts the files it could not read ({STATE_ERRORS})",
            unreadable >= len(files),
            f'{STATE_ERRORS}{{kind="unreadable"}} = {unreadable:g}',
        )
        return result


@dataclass(frozen=True, slots=True)
class Replug:
    """The device unplugged ``replugs`` times, for ``unplugged`` s each, plugged in for
    ``plugged`` s between; the gateway without MQTT (the link alone is under test)."""

    replugs: int = 100
    plugged: float = 1.5
    unplugged: float = 0.5

    name = "device replugged"

    @property
    def seconds(self) -> float:
        """How long the device sends (on a machine that starts the gateway at once)."""
        every = self.plugged + self.unplugged
        return self.replugs * every + self.unplugged + self.plugged / 2  # ends plugged in

    def run(self, common: Common, workdir: Path) -> Result:
        result = Result(f"{self.name} {self.replugs} times at {common.rate:g} frames/s", workdir)
        every = self.plugged + self.unplugged
        duration = self.seconds
        with Rig(
            workdir, common, duration=duration, disconnect=(every, self.unplugged), mqtt=False
        ) as rig:
            watcher = rig.watch_websocket()
            rig.wait_first(watcher)
            rig.wait_device()
            truth = read_truth(rig.device.truth)
            first = match_frames(truth.frames, watcher.arrivals()).first or 0
            rig.settle(watcher, len(truth.frames) - first)
        matching = match_frames(truth.frames, watcher.arrivals())
        lost = matching.missing(truth.frames)
        losses = classify_replug_losses(truth.frames, truth.windows, matching)
        delays = reconnect_delays(truth.frames, truth.windows, matching)
        _counted(result, truth, matching, lost)
        result.figure("unplugged", len(truth.windows))
        result.figure("frames not sent while unplugged", sum(w.skipped for w in truth.windows))
        result.figure("reconnect ms p50 (device back -> first frame relayed)", _ms(delays, 0.5))
        result.figure("reconnect ms p99", _ms(delays, 0.99))
        result.figure("reconnect ms max", _ms(delays, 1.0))
        result.figure(
            "frames lost just before an unplug (unread in the port)", losses.before_unplug
        )
        result.check(
            "reconnected after every replug",
            len(truth.windows) == self.replugs and losses.returns_without_frames == 0,
            f"{len(truth.windows)} unplugs, {len(delays)} returns with frames",
        )
        result.check(
            "0 frames lost after the device's return",
            losses.after_return == 0 and losses.other == 0,
            f"{losses.after_return} lost after a return, {losses.other} elsewhere",
        )
        return result


def _ms(delays: Sequence[float], fraction: float) -> float:
    return percentile(delays, fraction) * 1000


def _queue_size(common: Common, seconds: float) -> int:
    """Messages the gateway must be able to hold for ``seconds`` of frames, with room."""
    return max(100_000, int(common.rate * seconds * 2))


Scenario = BrokerOutage | GatewayKill | RestartWhileAway | DiskFull | CorruptState | Replug

SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "broker": BrokerOutage,
    "kill": GatewayKill,
    "restart": RestartWhileAway,
    "disk-full": DiskFull,
    "corrupt": CorruptState,
    "replug": Replug,
}
"""The scenarios by their name on the command line, in the order they run."""
