"""The one reconnect policy: capped exponential backoff with jitter, reset on success.

Every link the gateway owns (serial port, TCP serial server, MQTT broker) waits the
delays this yields between attempts, and starts a new generator after a success.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

__all__ = ["backoff"]


def backoff(
    *,
    initial: float = 0.5,
    maximum: float = 30.0,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield delays in [d/2, d], where d grows from ``initial`` by ``factor`` up to ``maximum``.

    The jitter spreads the reconnects of many gateways after a broker restart; the
    lower bound of d/2 keeps a retry loop from ever spinning. Make a new generator after
    a successful connection, so that the next failure starts short again.
    """
    rng = rng or random.Random()
    delay = initial
    while True:
        yield rng.uniform(delay / 2.0, delay)
        delay = min(delay * factor, maximum)
