"""What a subscriber of the gateway sees, recorded envelope by envelope.

- :class:`MqttCounter`: a persistent QoS 1 MQTT subscriber (clean session off, a fixed
  client id), so the broker keeps what it misses while it is away and across the
  broker's own restarts. paho runs its network thread (this is harness code).
- :class:`WebSocketWatcher`: a WebSocket client of one gateway run, subscribed to
  everything, in a thread of its own.

Both record each envelope as an :class:`Arrival`, in arrival order, duplicates
included; statuses and other messages are left out.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from scripts.fault_suite.parts import START_TIMEOUT, Broker, HarnessError

__all__ = ["Arrival", "MqttCounter", "Record", "WebSocketWatcher", "envelope_arrival"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """One envelope as a subscriber got it."""

    seq: int
    payload: bytes
    """The envelope's JSON as sent."""
    raw: str
    """The frame as the gateway read it, hex (the envelope's ``raw``; "" without it)."""
    time: float
    """The envelope's ``time``: Unix time when the gateway read the frame's last byte."""
    at: float
    """``time.monotonic()`` of this process when it arrived."""


def envelope_arrival(payload: bytes) -> Arrival | None:
    """The arrival of an envelope (``"type": "message"``); None for anything else."""
    try:
        document = json.loads(payload)
    except ValueError:
        return None  # a status: "online" or "offline"
    if not isinstance(document, dict) or document.get("type") != "message":
        return None
    return _arrival(payload, document)


def _arrival(payload: bytes, document: dict[str, Any]) -> Arrival:
    return Arrival(
        int(document["seq"]),
        payload,
        str(document.get("raw", "")),
        float(document["time"]),
        time.monotonic(),
    )


class Record:
    """Arrivals in order, shared between a network thread and the harness."""

    def __init__(self) -> None:
        self._arrivals: list[Arrival] = []
        self._payloads: set[bytes] = set()
        self._lock = threading.Lock()

    def add(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)
            self._payloads.add(arrival.payload)

    def distinct(self) -> int:
        """Distinct envelopes so far (a message sent again counts once)."""
        with self._lock:
            return len(self._payloads)

    def arrivals(self) -> list[Arrival]:
        """Every envelope so far, in arrival order."""
        with self._lock:
            return list(self._arrivals)

    def count(self) -> int:
        with self._lock:
            return len(self._arrivals)

    def save(self, path: Path) -> None:
        """Write every arrival to ``path``, one JSON line each (for a post-mortem)."""
        with path.open("w", encoding="utf-8") as lines:
            for arrival in self.arrivals():
                record = {"seq": arrival.seq, "time": arrival.time, "at": arrival.at}
                lines.write(json.dumps({**record, "raw": arrival.raw}) + "\n")

    def last(self) -> Arrival | None:
        """The latest envelope, None before the first."""
        with self._lock:
            return self._arrivals[-1] if self._arrivals else None

    def last_at(self) -> float | None:
        """When the latest envelope arrived (monotonic), None before the first."""
        last = self.last()
        return last.at if last is not None else None

    def live_since(self) -> float | None:
        """Since when (monotonic) envelopes can reach this record; None while they cannot."""
        return 0.0


class MqttCounter(Record):
    """Subscribes to ``topic`` with QoS 1 on ``broker``, in a persistent session
    (``client_id``, clean session off), and records every envelope.

    It reconnects by itself after the broker went away, every second.
    """

    def __init__(
        self, broker: Broker, *, topic: str = "tgw/#", client_id: str = "tgw-faults-counter"
    ) -> None:
        super().__init__()
        self.broker = broker
        self.topic = topic
        self._subscribed = threading.Event()
        self._connected_at: float | None = None
        client = self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.reconnect_delay_set(min_delay=1, max_delay=1)

    def start(self) -> Self:
        """Connect; return once the broker acknowledged the subscription."""
        self._client.connect(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT):
            self.close()
            raise HarnessError(f"no SUBACK for {self.topic!r} from {self.broker}")
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            self._connected_at = time.monotonic()
            client.subscribe(self.topic, qos=1)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected_at = None

    def live_since(self) -> float | None:
        """Since when the subscriber is connected (what the broker kept for it arrives
        then); None while it is not."""
        return self._connected_at

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
        arrival = envelope_arrival(bytes(message.payload))
        if arrival is not None:
            self.add(arrival)


class WebSocketWatcher(Record):
    """A WebSocket client of the gateway on ``port``, subscribed to ``#``: records every
    envelope, and the ``dropped`` notices (``dropped``: how many the gateway said it
    dropped for this client). It ends when the gateway closes the connection."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port
        self.dropped = 0
        self._ready = threading.Event()
        self._error: Exception | None = None
        self._connection: ClientConnection | None = None
        self._thread = threading.Thread(target=self._run, name="websocket watcher", daemon=True)

    def start(self) -> Self:
        """Connect and subscribe; return once the subscription is confirmed."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT * 2) or self._error is not None:
            self.close()
            raise HarnessError(
                f"no WebSocket subscription on port {self.port}: {self._error or 'no answer'}"
            )
        return self

    def close(self) -> None:
        """Close the connection (if still open) and wait for the thread."""
        if self._connection is not None:
            self._connection.close()
        if self._thread.is_alive():
            self._thread.join(START_TIMEOUT)

    def _run(self) -> None:
        url = f"ws://127.0.0.1:{self.port}"
        try:
            with connect(url, open_timeout=START_TIMEOUT, max_size=None) as connection:
                self._connection = connection
                self._expect(connection, "hello")
                connection.send(json.dumps({"type": "subscribe", "filters": ["#"]}))
                self._expect(connection, "subscribed")
                self._ready.set()
                for message in connection:
                    self._take(message.encode() if isinstance(message, str) else message)
        except ConnectionClosed:
            pass
        except Exception as exc:  # told to start(), which raises it
            self._error = exc
        finally:
            self._ready.set()

    def _take(self, payload: bytes) -> None:
        document = json.loads(payload)
        if document.get("type") == "message":
            self.add(_arrival(payload, document))
        elif document.get("type") == "dropped":
            self.dropped += int(document.get("count", 0))

    @staticmethod
    def _expect(connection: ClientConnection, kind: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            document: dict[str, Any] = json.loads(
                connection.recv(timeout=max(0.0, deadline - time.monotonic()))
            )
            if document.get("type") == kind:
                return
            if document.get("type") == "error":
                raise HarnessError(f"the gateway's WebSocket said: {document}")
