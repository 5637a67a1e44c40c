"""Fault injection: what a noisy line, a flaky cable and buggy firmware do to frames. No I/O.

Per-frame faults each have a probability (:class:`FaultRates`); a frame gets at most
one corruption, so the ground truth says plainly what happened to it. Silence (a
stalled device) and disconnects follow a :class:`Schedule`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CORRUPTIONS", "FaultKind", "FaultRates", "Piece", "Schedule", "inject"]


class FaultKind(StrEnum):
    """Every fault the simulator can inject."""

    NOISE = "noise"
    """1 to 8 random bytes before a frame."""
    GARBAGE_BURST = "garbage_burst"
    """32 to 256 random bytes before a frame."""
    BIT_FLIP = "bit_flip"
    DROP_BYTE = "drop_byte"
    TRUNCATE = "truncate"
    """Only the first part of the frame is sent."""
    BAD_CHECKSUM = "bad_checksum"
    DUPLICATE = "duplicate"
    """The frame is sent twice."""
    STALL = "stall"
    """The device sends nothing for a while."""
    DISCONNECT = "disconnect"
    """The link vanishes for a while."""


CORRUPTIONS = (FaultKind.BIT_FLIP, FaultKind.DROP_BYTE, FaultKind.TRUNCATE, FaultKind.BAD_CHECKSUM)
"""Faults that spoil the frame they hit, tried in this order (at most one per frame)."""


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability per frame of each per-frame fault (0 disables it)."""

    noise: float = 0.0
    garbage_burst: float = 0.0
    bit_flip: float = 0.0
    drop_byte: float = 0.0
    truncate: float = 0.0
    bad_checksum: float = 0.0
    duplicate: float = 0.0

    def __post_init__(self) -> None:
        for kind, rate in self.as_dict().items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{kind.value} rate must be between 0 and 1, got {rate}")

    def as_dict(self) -> dict[FaultKind, float]:
        """The rates by fault kind."""
        return {FaultKind(name): getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class Schedule:
    """A recurring window: the first opens ``every`` seconds in, each lasts ``duration``."""

    every: float
    duration: float

    def __post_init__(self) -> None:
        if not 0.0 < self.duration < self.every:
            raise ValueError(
                f"expected 0 < duration < every, got every {self.every} s, "
                f"duration {self.duration} s"
            )

    def window_at(self, now: float) -> tuple[float, float] | None:
        """The (start, end) of the window ``now`` falls in, or None."""
        start = (now // self.every) * self.every
        if start > 0 and now < start + self.duration:
            return start, start + self.duration
        return None

    def next_start(self, now: float) -> float:
        """The start of the first window after ``now``."""
        return (now // self.every + 1) * self.every


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes to send: a frame (possibly spoiled by ``fault``), its duplicate, or junk."""

    data: bytes
    kind: FaultKind | None
    """None for the frame sent as built; the fault otherwise."""
    is_frame: bool


def _corrupt(frame: bytes, kind: FaultKind, checksum_width: int, rng: random.Random) -> bytes:
    data = bytearray(frame)
    match kind:
        case FaultKind.BIT_FLIP:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        case FaultKind.DROP_BYTE:
            del data[rng.randrange(len(data))]
        case FaultKind.TRUNCATE:
            del data[rng.randint(1, len(data) - 1) :]
        case FaultKind.BAD_CHECKSUM:
            data[len(data) - 1 - rng.randrange(checksum_width)] ^= rng.randint(1, 255)
    return bytes(data)


def inject(frame: bytes, rates: FaultRates, checksum_width: int, rng: random.Random) -> list[Piece]:
    """Return what goes on the wire for ``frame``: junk before it, the frame, a duplicate."""
    pieces = []
    if rng.random() < rates.noise:
        pieces.append(Piece(rng.randbytes(rng.randint(1, 8)), FaultKind.NOISE, is_frame=False))
    if rng.random() < rates.garbage_burst:
        burst = rng.randbytes(rng.randint(32, 256))
        pieces.append(Piece(burst, FaultKind.GARBAGE_BURST, is_frame=False))
    corruption = next(
        (kind for kind in CORRUPTIONS if rng.random() < getattr(rates, kind.value)), None
    )
    if corruption is None:
        pieces.append(Piece(frame, None, is_frame=True))
        if rng.random() < rates.duplicate:
            pieces.append(Piece(frame, FaultKind.DUPLICATE, is_frame=True))
    else:
        pieces.append(Piece(_corrupt(frame, corruption, checksum_width, rng), corruption, True))
    return pieces
