"""Fault injection without I/O: each fault does what it says, and only that."""

from __future__ import annotations

import random

import pytest

from fwsim.faults import FaultKind, FaultRates, Piece, Schedule, inject

FRAME = bytes.fromhex("AA 55 12 05 00 74 0E FB FF 5A EC")


def pieces_for(rates: FaultRates, seed: int = 1, checksum_width: int = 1) -> list[Piece]:
    return inject(FRAME, rates, checksum_width, random.Random(seed))


def test_no_faults_sends_the_frame_as_built() -> None:
    assert pieces_for(FaultRates()) == [Piece(FRAME, None, is_frame=True)]


@pytest.mark.parametrize("seed", range(20))
def test_each_corruption_spoils_the_frame_as_named(seed: int) -> None:
    [flipped] = pieces_for(FaultRates(bit_flip=1.0), seed)
    assert flipped.kind is FaultKind.BIT_FLIP
    differing = [a ^ b for a, b in zip(flipped.data, FRAME, strict=True) if a != b]
    assert len(differing) == 1
    assert bin(differing[0]).count("1") == 1

    [dropped] = pieces_for(FaultRates(drop_byte=1.0), seed)
    assert len(dropped.data) == len(FRAME) - 1
    assert any(dropped.data == FRAME[:i] + FRAME[i + 1 :] for i in range(len(FRAME)))

    [truncated] = pieces_for(FaultRates(truncate=1.0), seed)
    assert 1 <= len(truncated.data) < len(FRAME)
    assert FRAME.startswith(truncated.data)

    [bad] = pieces_for(FaultRates(bad_checksum=1.0), seed)
    assert bad.data[:-1] == FRAME[:-1]
    assert bad.data[-1] != FRAME[-1]

    [bad_crc] = pieces_for(FaultRates(bad_checksum=1.0), seed, checksum_width=2)
    assert bad_crc.data[:-2] == FRAME[:-2]
    assert bad_crc.data[-2:] != FRAME[-2:]


def test_junk_goes_before_the_frame_and_a_duplicate_after() -> None:
    noise, burst, frame, duplicate = pieces_for(
        FaultRates(noise=1.0, garbage_burst=1.0, duplicate=1.0)
    )
    assert noise.kind is FaultKind.NOISE
    assert 1 <= len(noise.data) <= 8
    assert burst.kind is FaultKind.GARBAGE_BURST
    assert 32 <= len(burst.data) <= 256
    assert frame == Piece(FRAME, None, is_frame=True)
    assert duplicate == Piece(FRAME, FaultKind.DUPLICATE, is_frame=True)


def test_a_spoiled_frame_is_never_duplicated() -> None:
    pieces = pieces_for(FaultRates(truncate=1.0, duplicate=1.0))
    assert [piece.kind for piece in pieces] == [FaultKind.TRUNCATE]


def test_rates_are_probabilities() -> None:
    rng = random.Random(3)
    hits = sum(
        inject(FRAME, FaultRates(bit_flip=0.25), 1, rng)[0].kind is FaultKind.BIT_FLIP
        for _ in range(4000)
    )
    assert 800 < hits < 1200
    with pytest.raises(ValueError, match=r"bit_flip rate must be between 0 and 1, got 1\.5"):
        FaultRates(bit_flip=1.5)


def test_schedule_windows() -> None:
    schedule = Schedule(every=10.0, duration=2.0)
    assert schedule.window_at(5.0) is None
    assert schedule.window_at(10.0) == (10.0, 12.0)
    assert schedule.window_at(11.9) == (10.0, 12.0)
    assert schedule.window_at(12.0) is None
    assert schedule.window_at(0.5) is None  # no window at start-up
    assert schedule.next_start(10.5) == 20.0
    with pytest.raises(ValueError, match="expected 0 < duration < every"):
        Schedule(every=1.0, duration=2.0)
