"""One link's outages: when to try again, what to log, what to count.

Every link the gateway owns (a serial port, a TCP serial server, the MQTT broker) runs
the same loop: try; on a failure tell :class:`Reconnect` (:meth:`~Reconnect.failed`, or
:meth:`~Reconnect.lost` when a link that worked ended), then ``await``
:meth:`~Reconnect.wait` and try again. :class:`Reconnect` draws the delays from
:func:`gateway.runtime.backoff.backoff`, starting short again after a link that worked,
and logs an outage once: a WARNING for its first failure, INFO when the problem changes,
DEBUG for every attempt that fails the same way again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass

import prometheus_client

from gateway.runtime.backoff import backoff

__all__ = ["Reconnect", "Wording"]


@dataclass(frozen=True, slots=True)
class Wording:
    """The log messages of an outage: ``%``-templates with the keys ``link`` (the link's
    name), ``problem`` and ``delay`` (seconds until the next attempt)."""

    lost: str
    """A link that worked ended (a WARNING)."""
    failed: str
    """The first failure of an outage (a WARNING)."""
    failing: str
    """A later failure in the same outage (INFO for a new problem, else DEBUG)."""

    @classmethod
    def same(cls, template: str) -> Wording:
        """One message for every case."""
        return cls(template, template, template)


class Reconnect:
    """The retry state of the link called ``link``.

    ``counter`` counts the attempts made after a failure or a loss. Call every method
    from the event loop's thread.
    """

    def __init__(
        self,
        link: str,
        *,
        initial: float,
        maximum: float,
        logger: logging.Logger,
        wording: Wording,
        counter: prometheus_client.Counter,
        rng: random.Random | None = None,
    ) -> None:
        self._link = link
        self._initial = initial
        self._maximum = maximum
        self._logger = logger
        self._wording = wording
        self._counter = counter
        self._rng = rng
        self._delays = self._backoff()
        self._delay = 0.0
        self._outage = False
        self.reconnects = 0
        """Attempts made after a failure or a loss."""
        self.failures = 0
        """Attempts that failed since the last link that worked ended."""
        self.last_error: str | None = None
        """The latest problem, in an operator's words (None before the first)."""

    def failed(self, problem: str) -> None:
        """An attempt failed (or gave a link that did not work): log it and draw the delay."""
        self.failures += 1
        if not self._outage:
            level, template = logging.WARNING, self._wording.failed
        elif problem != self.last_error:
            level, template = logging.INFO, self._wording.failing
        else:
            level, template = logging.DEBUG, self._wording.failing
        self._record(level, template, problem)

    def lost(self, problem: str) -> None:
        """A link that worked ended: a new outage begins, with short delays again."""
        self._delays = self._backoff()
        self.failures = 0
        self._record(logging.WARNING, self._wording.lost, problem)

    async def wait(self, interrupt: asyncio.Event | None = None) -> None:
        """Wait the delay drawn at the last failure (less if ``interrupt`` is set
        meanwhile), then count the attempt the caller is about to make."""
        if interrupt is None:
            await asyncio.sleep(self._delay)
        else:
            try:
                async with asyncio.timeout(self._delay):
                    await interrupt.wait()
            except TimeoutError:
                pass
        self.reconnects += 1
        self._counter.inc()

    def _record(self, level: int, template: str, problem: str) -> None:
        self._outage = True
        self.last_error = problem
        self._delay = next(self._delays)
        self._logger.log(
            level, template, {"link": self._link, "problem": problem, "delay": self._delay}
        )

    def _backoff(self) -> Iterator[float]:
        return backoff(initial=self._initial, maximum=self._maximum, rng=self._rng)
