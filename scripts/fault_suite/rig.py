"""One scenario's parts put together: a broker, a counting subscriber, the gateway, the
device, each in a folder of the run's own.

:class:`Rig` starts them in that order (the device last, so that its clock is the
scenario's) and stops whatever is still running when its ``with`` block ends, on
error and on Ctrl-C too. The scenario then drives the faults: stop the broker, kill
the gateway, and so on, through the parts' own methods.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.config import MqttConfig
from gateway.outputs.mqtt import OUTBOX_FILE
from gateway.runtime.gateway import JOURNAL_FILE
from scripts.fault_suite.observers import MqttCounter, Record, WebSocketWatcher
from scripts.fault_suite.parts import (
    POLL,
    START_TIMEOUT,
    Broker,
    Device,
    GatewayProcess,
    HarnessError,
    free_port,
    wait_for,
)

__all__ = ["DEVICE", "JOURNAL_FILE", "OUTBOX_FILE", "Common", "DepthSampler", "Rig"]

DEVICE = "node"
"""The device's name in the gateway's configuration (topics ``tgw/node/...``)."""


@dataclass(frozen=True, slots=True)
class Common:
    """Settings every scenario shares."""

    rate: float = 1000.0
    """Frames per second the device sends."""
    commit_interval: float = 0.05
    """The gateway's ``[mqtt] commit_interval``: seconds between commits of its outbox."""
    max_inflight: int = 100
    """The gateway's ``[mqtt] max_inflight``, if the gateway has that key (one message
    in flight at a time otherwise)."""
    broker_inflight: int = 20
    """Messages mosquitto sends a subscriber before the first acknowledgement."""
    drain_timeout: float = 1800.0
    """Seconds to wait, once the device has stopped, for everything to arrive."""
    quiet: float = 3.0
    """Seconds without a new envelope, with the gateway's outbox empty, after which what
    has not arrived is taken as lost."""

    def gateway_inflight(self) -> int:
        """Publishes the gateway may have in flight at once."""
        return self.max_inflight if "max_inflight" in MqttConfig.model_fields else 1


def gateway_config(
    *,
    link: Path,
    http_port: int,
    broker_port: int | None,
    common: Common,
    queue_size: int,
) -> str:
    """The TOML of ``tgw run`` for a scenario: the device on ``link``, WebSocket and HTTP
    on ``http_port``, MQTT QoS 1 to ``broker_port`` (off when None)."""
    mqtt = "enabled = false\n"
    if broker_port is not None:
        mqtt = (
            "enabled = true\n"
            f'host = "127.0.0.1"\nport = {broker_port}\n'
            'client_id = "tgw-faults-gateway"\ntopic_prefix = "tgw"\n'
            f"qos = 1\nqueue_size = {queue_size}\n"
            f"outbox_max_bytes = {max(queue_size * 1024, 1 << 28)}\n"
            f"commit_interval = {common.commit_interval}\n"
            "reconnect_initial = 0.2\nreconnect_max = 1.0\n"
        )
        if "max_inflight" in MqttConfig.model_fields:
            mqtt += f"max_inflight = {common.max_inflight}\n"
    return f"""shutdown_timeout = 10.0

[[sources]]
type = "serial"
device = "{DEVICE}"
path = "{link}"
profile = "{Device.PROFILE}"
include_raw = true
silence_timeout = 10.0
reconnect_initial = 0.1
reconnect_max = 0.5

[websocket]
host = "127.0.0.1"
port = {http_port}
queue_size = {queue_size}

[mqtt]
{mqtt}
[logging]
level = "info"
"""


class Rig:
    """The parts of one scenario, in ``workdir``.

    ``duration``: seconds the device sends (None: until :meth:`end_device`);
    ``disconnect``: its unplug schedule (every, for); ``mqtt``: publish to a broker,
    counted by :attr:`counter`; ``queue_size``:
    messages the gateway may hold for MQTT and for a WebSocket client;
    ``file_size_limit``: bytes any file of the gateway may reach.
    """

    def __init__(
        self,
        workdir: Path,
        common: Common,
        *,
        duration: float | None,
        disconnect: tuple[float, float] | None = None,
        mqtt: bool = True,
        queue_size: int = 100_000,
        file_size_limit: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.common = common
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = workdir / "state"
        self.broker = Broker(workdir / "broker", inflight=common.broker_inflight) if mqtt else None
        self.counter = MqttCounter(self.broker) if self.broker is not None else None
        http_port = free_port()
        link = workdir / "ttyFAULT"
        config = workdir / "gateway.toml"
        config.write_text(
            gateway_config(
                link=link,
                http_port=http_port,
                broker_port=self.broker.port if self.broker is not None else None,
                common=common,
                queue_size=queue_size,
            ),
            encoding="utf-8",
        )
        self.gateway = GatewayProcess(
            config,
            self.state_dir,
            workdir / "gateway.log",
            http_port=http_port,
            file_size_limit=file_size_limit,
        )
        self.device = Device(
            link,
            workdir / "truth.jsonl",
            workdir / "fwsim.log",
            rate=common.rate,
            duration=duration,
            disconnect=disconnect,
        )
        self.started = 0.0
        """``time.monotonic()`` when the device started sending."""
        self._stack = ExitStack()
        self._watchers = 0

    @property
    def outbox_files(self) -> list[Path]:
        """The gateway's MQTT outbox in its state directory, with its WAL files."""
        path = self.state_dir / OUTBOX_FILE
        return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]

    def __enter__(self) -> Self:
        stack = self._stack
        try:
            if self.broker is not None and self.counter is not None:
                self.broker.start()
                stack.callback(self.broker.stop)
                stack.enter_context(self.counter.start())
                stack.callback(self.counter.save, self.workdir / "mqtt-arrivals.jsonl")
            self.start_gateway()
            stack.callback(self._stop_gateway)
            self.device.start()
            self.started = time.monotonic()
            stack.callback(self.device.stop)
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def start_gateway(self) -> None:
        """Start (or start again) the gateway with its configuration and state."""
        self.gateway.start()

    def watch_websocket(self) -> WebSocketWatcher:
        """A WebSocket client of the gateway as it runs now, closed with the rig."""
        watcher = WebSocketWatcher(self.gateway.http_port).start()
        self._watchers += 1
        self._stack.callback(watcher.save, self.workdir / f"websocket-{self._watchers}.jsonl")
        self._stack.callback(watcher.close)
        return watcher

    def sleep_until(self, seconds: float) -> None:
        """Sleep until ``seconds`` after the device started."""
        time.sleep(max(0.0, self.started + seconds - time.monotonic()))

    def wait_first(self, record: Record) -> None:
        """Wait until the first envelope reached ``record``: the chain works."""
        wait_for(lambda: record.count() > 0, "a first envelope from the device")

    def wait_until(self, condition: Callable[[], bool], timeout: float = START_TIMEOUT) -> bool:
        """Wait until ``condition()`` holds, ``timeout`` s at most; say whether it does."""
        deadline = time.monotonic() + timeout
        while not (held := condition()) and time.monotonic() < deadline:
            time.sleep(POLL)
        return held

    def end_device(self, after: float) -> None:
        """Let the device send ``after`` s more, then end its run; wait for its end."""
        time.sleep(after)
        self.device.finish()
        self.wait_device()

    def wait_device(self) -> None:
        """Wait for the device to finish its run and the gateway to read what it sent."""
        left = (self.device.duration or 0.0) - (time.monotonic() - self.started)
        self.device.wait(max(0.0, left) + 60.0)

    def settle(self, record: Record, expected: int) -> None:
        """Wait, once the device has stopped, until ``record`` holds ``expected`` distinct
        envelopes; or until the gateway's outbox is empty and nothing came for
        :attr:`Common.quiet` seconds while ``record`` could receive; or until
        :attr:`Common.drain_timeout` has passed."""
        common = self.common
        deadline = time.monotonic() + common.drain_timeout
        while time.monotonic() < deadline and record.distinct() < expected:
            live = record.live_since()
            if live is not None:
                last = max(live, record.last_at() or 0.0)
                if time.monotonic() - last > common.quiet and self.outbox_depth() == 0:
                    return
            time.sleep(0.2)

    def outbox_depth(self) -> float:
        """Messages waiting for the broker in the gateway (0 without MQTT)."""
        if self.broker is None or not self.gateway.running:
            return 0.0
        return self.gateway.metric("tgw_mqtt_queue_depth")

    def _stop_gateway(self) -> None:
        if self.gateway.running:
            with contextlib.suppress(HarnessError):
                self.gateway.terminate()


class DepthSampler:
    """Samples the gateway's MQTT outbox depth every ``interval`` s in a thread, while
    used as a context manager: :attr:`samples` are (monotonic time, depth)."""

    def __init__(self, rig: Rig, interval: float = 0.25) -> None:
        self._rig = rig
        self._interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="depth sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._rig.gateway.running:
                self.samples.append((time.monotonic(), self._rig.outbox_depth()))

    def peak(self) -> float:
        return max((depth for _, depth in self.samples), default=0.0)

    def caught_up(self, since: float, below: float) -> float | None:
        """Seconds from ``since`` to the first sample after it under ``below``, if any."""
        return next(
            (at - since for at, depth in self.samples if at >= since and depth < below), None
        )
