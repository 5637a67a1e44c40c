"""The reconnect helper: what an outage logs, the delays it draws, what it counts."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from prometheus_client import CollectorRegistry, Counter

from gateway.runtime.reconnect import Reconnect, Wording

LOGGER = "tests.reconnect"
WORDING = Wording(
    lost="%(link)s lost: %(problem)s",
    failed="%(link)s failed: %(problem)s",
    failing="%(link)s still: %(problem)s",
)


def make(
    *, initial: float = 1.0, maximum: float = 8.0, wording: Wording = WORDING
) -> tuple[Reconnect, CollectorRegistry]:
    registry = CollectorRegistry()
    reconnect = Reconnect(
        "link",
        initial=initial,
        maximum=maximum,
        logger=logging.getLogger(LOGGER),
        wording=wording,
        counter=Counter("attempts", "attempts", registry=registry),
        rng=random.Random(1),
    )
    return reconnect, registry


# (call, problem) -> (level, message, failures afterwards)
OUTAGES = [
    ("failed", "refused", logging.WARNING, "link failed: refused", 1),
    ("failed", "refused", logging.DEBUG, "link still: refused", 2),
    ("failed", "timed out", logging.INFO, "link still: timed out", 3),
    ("failed", "timed out", logging.DEBUG, "link still: timed out", 4),
    ("lost", "hung up", logging.WARNING, "link lost: hung up", 0),
    ("failed", "hung up", logging.DEBUG, "link still: hung up", 1),
    ("failed", "refused", logging.INFO, "link still: refused", 2),
    ("lost", "reset", logging.WARNING, "link lost: reset", 0),
]


def test_an_outage_is_logged_once_then_quieter(caplog: pytest.LogCaptureFixture) -> None:
    reconnect, _ = make()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for call, problem, level, message, failures in OUTAGES:
        caplog.clear()
        getattr(reconnect, call)(problem)
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, message)]
        assert (reconnect.failures, reconnect.last_error) == (failures, problem)


def test_delays_grow_to_the_maximum_and_start_short_after_a_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reconnect, _ = make(initial=1.0, maximum=8.0, wording=Wording.same("%(delay)s"))
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for _ in range(6):
        reconnect.failed("refused")
    reconnect.lost("hung up")
    delays = [float(record.getMessage()) for record in caplog.records]
    bounds = [1, 2, 4, 8, 8, 8, 1]
    assert len(delays) == len(bounds)
    for delay, bound in zip(delays, bounds, strict=True):
        assert bound / 2 <= delay <= bound


def test_wait_counts_the_attempt_and_an_interrupt_cuts_it_short() -> None:
    reconnect, registry = make(initial=60.0, maximum=60.0)

    async def scenario() -> None:
        reconnect.failed("refused")
        interrupt = asyncio.Event()
        waiting = asyncio.create_task(reconnect.wait(interrupt))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # a delay of 30 s or more
        interrupt.set()
        async with asyncio.timeout(5):
            await waiting

    asyncio.run(scenario())
    assert reconnect.reconnects == 1
    assert registry.get_sample_value("attempts_total") == 1
