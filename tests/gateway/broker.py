"""A real mosquitto broker for the MQTT tests, and a subscriber that records what it gets.

:class:`Mosquitto` runs ``mosquitto`` on a free port of 127.0.0.1 with a config file
of its own in a temporary directory; it can be stopped and started again on the same
port (a broker restart). The ``mosquitto`` fixture yields a running one. A missing
``mosquitto`` binary fails the test: these tests are never skipped.

:class:`Subscriber` is a paho-mqtt client on its own network thread (this is test
code: the gateway itself never runs a paho thread) that records every message on a
topic filter, with its QoS and retain flag. Its ``wait_until*`` methods wait for what
the test expects and fail with what did arrive.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "Mosquitto",
    "Received",
    "Subscriber",
    "find_mosquitto",
    "free_port",
    "mosquitto",
]

HOST = "127.0.0.1"
POLL = 0.01
"""Seconds between two checks of a condition."""
GUARD = 10.0
"""Seconds after which a wait fails: a hang guard, not a timing assumption."""

_SEARCH_PATH = "/usr/sbin:/usr/local/sbin:/sbin"


def find_mosquitto() -> str:
    """The path of the ``mosquitto`` binary; fail the test if there is none."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path=_SEARCH_PATH)
    if found is None:
        pytest.fail(
            "the MQTT tests need a real broker: no mosquitto in PATH or in "
            f"{_SEARCH_PATH}; install it (apt-get install mosquitto)",
            pytrace=False,
        )
    return found


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """A mosquitto process on 127.0.0.1:``port``, started and stopped at will.

    ``persistence``: the broker saves its sessions and retained messages when it stops
    and loads them when it starts again, so a persistent subscriber misses nothing
    across a restart. ``anonymous=False``: every client is refused (there are no
    accounts).
    """

    def __init__(
        self, *, port: int | None = None, persistence: bool = False, anonymous: bool = True
    ) -> None:
        self.binary = find_mosquitto()
        self.host = HOST
        self.port = port if port is not None else free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="tgw-mosquitto-"))
        self.config_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"
        lines = [
            f"listener {self.port} {HOST}",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self._dir}/",
            "autosave_interval 0",
            "max_queued_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto", who cannot write here
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once its port accepts connections."""
        if self.running:
            raise RuntimeError(f"mosquitto on port {self.port} is running already")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + GUARD
        while not self._accepts():
            if self._process.poll() is not None:
                pytest.fail(
                    f"mosquitto exited with status {self._process.returncode} on port "
                    f"{self.port}:\n{self.log()}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mosquitto on port {self.port} not ready after {GUARD} s")
            time.sleep(POLL)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, so that it saves what it persists) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(GUARD)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker go on (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """End the broker at once (SIGKILL, paused or not), saving nothing."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _signal(self, number: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError(f"mosquitto on port {self.port} is not running")
        self._process.send_signal(number)

    def close(self) -> None:
        """Stop the broker and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log(self) -> str:
        """What mosquitto wrote so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=GUARD):
                return True
        except OSError:
            return False

    def __enter__(self) -> Mosquitto:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Mosquitto({self.host}:{self.port}, {state})"


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A running mosquitto of its own for one test, stopped at the end."""
    with Mosquitto() as broker:
        yield broker


@dataclass(frozen=True, slots=True)
class Received:
    """One message as a subscriber got it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


Predicate = Callable[[list["Received"]], bool]


class Subscriber:
    """Records every message on ``topic`` (a filter), subscribed with QoS 2.

    ``persistent``: a session that outlives the connection (clean session off, with
    ``client_id``): with a persistent broker, the subscriber gets every message sent
    while it was away, across broker restarts. It reconnects on its own.
    """

    def __init__(
        self,
        broker: Mosquitto,
        topic: str,
        *,
        client_id: str = "",
        persistent: bool = False,
    ) -> None:
        if persistent and not client_id:
            raise ValueError("a persistent subscriber needs a client_id")
        self.broker = broker
        self.topic = topic
        self._messages: list[Received] = []
        self._condition = threading.Condition()
        self._subscribed = threading.Event()
        client = self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=1)

    def start(self) -> Subscriber:
        """Connect and return once the broker acknowledged the subscription."""
        self._client.connect(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(GUARD):
            self.close()
            pytest.fail(f"no SUBACK for {self.topic!r} from {self.broker} within {GUARD} s")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def messages(self) -> list[Received]:
        """Everything received so far, in order."""
        with self._condition:
            return list(self._messages)

    def wait_until(self, predicate: Predicate, what: str) -> list[Received]:
        """Block until ``predicate(messages)`` holds; return the messages then.

        For tests without an event loop. Fails after :data:`GUARD` seconds, saying
        ``what`` was expected and what arrived.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: predicate(self._messages), GUARD):
                self._fail(what, self._messages)
            return list(self._messages)

    async def wait_until_async(self, predicate: Predicate, what: str) -> list[Received]:
        """:meth:`wait_until` for a test running an event loop: it keeps the loop running."""
        try:
            async with asyncio.timeout(GUARD):
                while not predicate(messages := self.messages):
                    await asyncio.sleep(POLL)
        except TimeoutError:
            self._fail(what, self.messages)
        return messages

    def _fail(self, what: str, messages: Sequence[Received]) -> NoReturn:
        shown = "\n".join(f"  {m}" for m in messages[-20:])
        pytest.fail(
            f"{self.topic!r}: {what} not received within {GUARD} s; "
            f"{len(messages)} messages, the last ones:\n{shown}",
            pytrace=False,
        )

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=2)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received = Received(
            message.topic, bytes(message.payload), message.qos, bool(message.retain)
        )
        with self._condition:
            self._messages.append(received)
            self._condition.notify_all()
