"""The real parts of a fault run, each a process of its own that can be stopped and restarted.

- :class:`Broker`: ``mosquitto`` on a free port of 127.0.0.1 with persistence on, no
  limit on what it queues for a subscriber, stopped with SIGTERM (so it saves its
  sessions) and started again on the same port.
- :class:`Device`: ``fwsim`` on a PTY behind a stable symlink, sending ``motion`` frames
  at a fixed rate for a fixed time, its ground truth in a JSON-lines file.
- :class:`GatewayProcess`: ``tgw run -c CONFIG --state-dir DIR``, killed or stopped and
  started again with the same state; optionally with a file size limit (RLIMIT_FSIZE),
  a full disk as the gateway sees it. Its log is read by a thread and kept.

Every wait has a deadline and raises :class:`HarnessError` when it passes: that is a
part that did not start or answer, never a measure.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from fwsim.device import DEFAULT_INTERVALS

__all__ = [
    "HOST",
    "Broker",
    "Device",
    "GatewayProcess",
    "HarnessError",
    "LogReader",
    "free_port",
    "wait_for",
]

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
"""Seconds a part may take to start or stop: a hang guard, not a timing assumption."""
POLL = 0.05
_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/sbin"


class HarnessError(Exception):
    """A part did not start, stop or answer in time: the run cannot go on."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], what: str, *, timeout: float = START_TIMEOUT) -> None:
    """Return once ``condition()`` holds; raise HarnessError saying ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise HarnessError(f"{what}: not within {timeout:g} s")
        time.sleep(POLL)


def program(name: str) -> Path:
    """``fwsim`` or ``tgw`` of this Python environment; HarnessError if not installed."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise HarnessError(
            f"no {name} next to {sys.executable}: install the project in this environment "
            "(pip install -e '.[test]')"
        )
    return path


class LogReader:
    """Reads a child's stderr in a thread: keeps every line and appends it to ``path``.

    The harness writes the file itself, so a file size limit on the child never hits
    its log.
    """

    def __init__(self, stream: IO[str], path: Path) -> None:
        self._stream = stream
        self._path = path
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name=f"log {path.name}", daemon=True)
        self._thread.start()

    def lines(self) -> list[str]:
        """Every line read so far."""
        with self._lock:
            return list(self._lines)

    def join(self, timeout: float) -> None:
        """Wait for the end of the stream (the child exited)."""
        self._thread.join(timeout)

    def _read(self) -> None:
        with self._path.open("a", encoding="utf-8") as log:
            for line in self._stream:
                with self._lock:
                    self._lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()
        self._stream.close()


def _stop(process: subprocess.Popen[str], sig: signal.Signals) -> int:
    """Send ``sig`` (if still running) and wait; SIGKILL after the guard. The exit status."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise HarnessError(
            f"pid {process.pid} did not exit within {START_TIMEOUT:g} s of {sig.name}; killed"
        ) from None


class Broker:
    """mosquitto on 127.0.0.1:``port`` (a free one by default), its files in ``directory``.

    Persistence is on: stopped with :meth:`stop` (SIGTERM) it saves the sessions of
    persistent subscribers and what waits for them, and loads them when started again.
    ``max_queued_messages 0``: nothing a subscriber has not taken yet is dropped.
    ``inflight`` messages at most go to a subscriber unacknowledged: after a restart the
    broker sends them again, so they may reach it twice.
    """

    def __init__(self, directory: Path, *, port: int | None = None, inflight: int = 20) -> None:
        found = shutil.which("mosquitto") or shutil.which("mosquitto", path=_SEARCH_PATH)
        if found is None:
            raise HarnessError(
                f"no mosquitto in PATH or in {_SEARCH_PATH}: install it (apt-get install mosquitto)"
            )
        self.binary = found
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.inflight = inflight
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path = directory / "mosquitto.conf"
        self.log_path = directory / "mosquitto.log"
        lines = [
            f"listener {self.port} {HOST}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {directory}/",
            "autosave_interval 0",
            "max_queued_messages 0",
            f"max_inflight_messages {inflight}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto", who cannot write here
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker; return once its port accepts connections."""
        if self.running:
            raise HarnessError(f"mosquitto on port {self.port} is running already")
        with self.log_path.open("a", encoding="utf-8") as log:
            process = self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

        def accepts() -> bool:
            if process.poll() is not None:
                log = self.log_path.read_text(encoding="utf-8", errors="replace")
                raise HarnessError(
                    f"mosquitto exited with status {process.returncode} on port {self.port}:\n{log}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return True
            except OSError:
                return False

        wait_for(accepts, f"mosquitto listening on port {self.port}")

    def stop(self) -> None:
        """Stop the broker with SIGTERM (it saves what it persists) and wait for it."""
        process, self._process = self._process, None
        if process is not None:
            _stop(process, signal.SIGTERM)

    def __repr__(self) -> str:
        return f"Broker({self.host}:{self.port}, {'running' if self.running else 'stopped'})"


class Device:
    """fwsim on a PTY (symlink ``link``) sending ``motion`` frames, nothing else, at ``rate``
    frames/s, with the ``addressed-crc16`` profile (each frame carries a sequence byte);
    ground truth in ``truth``.

    fwsim ends by itself after ``duration`` s, or when told to :meth:`finish` (with
    ``duration`` None), once the gateway has read what it wrote. ``disconnect``: (every,
    for) seconds, the PTY vanishes every ``every`` seconds for ``for`` seconds (an
    unplugged adapter).
    """

    PROFILE = "addressed-crc16"

    def __init__(
        self,
        link: Path,
        truth: Path,
        log: Path,
        *,
        rate: float,
        duration: float | None,
        seed: int = 1,
        disconnect: tuple[float, float] | None = None,
    ) -> None:
        self.link = link
        self.truth = truth
        self.log = log
        self.rate = rate
        self.duration = duration
        arguments = ["--link", str(link), "--profile", self.PROFILE, "--seed", str(seed)]
        arguments += ["--truth", str(truth)]
        if duration is not None:
            arguments += ["--duration", f"{duration:g}"]
        for name in DEFAULT_INTERVALS:
            interval = f"{1 / rate:.6g}" if name == "motion" else "off"
            arguments += ["--interval", f"{name}={interval}"]
        if disconnect is not None:
            arguments += ["--disconnect", f"{disconnect[0]:g}:{disconnect[1]:g}"]
        self.arguments = arguments
        self._process: subprocess.Popen[str] | None = None
        self._reader: LogReader | None = None

    def start(self) -> None:
        """Start fwsim; return once its PTY is there."""
        process = self._process = subprocess.Popen(
            [str(program("fwsim")), *self.arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        self._reader = LogReader(process.stderr, self.log)

        def serving() -> bool:
            if process.poll() is not None:
                raise HarnessError(f"fwsim exited with status {process.returncode}: {self.lines()}")
            return any(line.startswith("fwsim: serving on") for line in self.lines())

        wait_for(serving, "fwsim serving on its PTY")

    def lines(self) -> list[str]:
        return self._reader.lines() if self._reader is not None else []

    def truth_mark(self) -> int:
        """Where the truth file ends now (cheap: call it just before a fault), for
        :meth:`frames_before`."""
        return self.truth.stat().st_size

    def frames_before(self, mark: int) -> int:
        """Frames written to the PTY before :meth:`truth_mark` returned ``mark`` (fwsim
        writes a frame's truth line as soon as the frame is written)."""
        with self.truth.open("rb") as truth:
            data = truth.read(mark)
        complete = data[: data.rfind(b"\n") + 1]
        return sum(1 for line in complete.splitlines() if json.loads(line)["type"] == "frame")

    def wait(self, timeout: float) -> None:
        """Wait for fwsim to end (its duration over or :meth:`finish` called, and what it
        wrote read by the gateway)."""
        process = self._process
        if process is None:
            return
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"fwsim still running {timeout:g} s after its end") from None
        if self._reader is not None:
            self._reader.join(START_TIMEOUT)
        if status != 0:
            raise HarnessError(f"fwsim exited with status {status}: {self.lines()[-5:]}")

    def finish(self) -> None:
        """End the run (SIGUSR1): fwsim stops sending and exits once the gateway has read
        what it sent, as at the end of a duration; :meth:`wait` for it."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        """Stop fwsim now (SIGTERM), if it is still running."""
        if self._process is not None:
            _stop(self._process, signal.SIGTERM)


def _limit_file_size(limit: int) -> Callable[[], None]:
    """A preexec_fn: files grow to ``limit`` bytes at most; a write past it fails with
    EFBIG (SIGXFSZ ignored, so that it does not kill the process)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


class GatewayProcess:
    """``tgw run -c config --state-dir state_dir``, serving /healthz and /metrics on
    ``http_port``; its log appended to ``log``.

    :meth:`start` may be called again after :meth:`kill` or :meth:`terminate`: the same
    configuration and state directory. ``file_size_limit``: bytes any file it writes
    may reach (RLIMIT_FSIZE), a disk that is full for the gateway alone.
    """

    def __init__(
        self,
        config: Path,
        state_dir: Path,
        log: Path,
        *,
        http_port: int,
        file_size_limit: int | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.log = log
        self.http_port = http_port
        self.file_size_limit = file_size_limit
        self._process: subprocess.Popen[str] | None = None
        self._readers: list[LogReader] = []

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the gateway; return once /healthz answers 200."""
        if self.running:
            raise HarnessError("the gateway is running already")
        limit = self.file_size_limit
        process = self._process = subprocess.Popen(
            [
                str(program("tgw")),
                "run",
                "-c",
                str(self.config),
                "--state-dir",
                str(self.state_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limit_file_size(limit) if limit is not None else None,  # noqa: PLW1509
        )
        assert process.stderr is not None
        self._readers.append(LogReader(process.stderr, self.log))

        def healthy() -> bool:
            if process.poll() is not None:
                raise HarnessError(
                    f"tgw run exited with status {process.returncode}: {self.lines()[-5:]}"
                )
            return self.get("/healthz")[0] == 200

        wait_for(healthy, f"the gateway's /healthz on port {self.http_port}")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no last commit."""
        if self._process is not None:
            _stop(self._process, signal.SIGKILL)

    def terminate(self) -> int:
        """SIGTERM, a clean stop; its exit status."""
        if self._process is None:
            raise HarnessError("the gateway was never started")
        status = _stop(self._process, signal.SIGTERM)
        self._readers[-1].join(START_TIMEOUT)
        return status

    def lines(self) -> list[str]:
        """Every log line of every run so far."""
        return [line for reader in self._readers for line in reader.lines()]

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` from the gateway's HTTP server: status and body (0 if unreachable)."""
        url = f"http://{HOST}:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` in /metrics whose labels include ``labels``."""
        _, body = self.get("/metrics")
        return sum_samples(body.decode(), name, labels)


_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def sum_samples(text: str, name: str, labels: dict[str, str]) -> float:
    """Sum of the samples of metric ``name`` in a Prometheus text exposition that carry
    every label of ``labels`` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match.group(1) != name:
            continue
        found = dict(_LABEL.findall(match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(3))
    return total


def copy_files(paths: Sequence[Path], target: Path) -> list[Path]:
    """Copy those of ``paths`` that exist into ``target``; the copies."""
    target.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        if path.exists():
            copies.append(Path(shutil.copy2(path, target / path.name)))
    return copies
