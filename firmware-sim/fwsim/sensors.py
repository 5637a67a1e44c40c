"""Sensor models that behave like sensors: slow drift, noise, a draining battery.

Each model owns its random generator (seeded by the device) and is advanced by the
simulated time that passed, so a run with the same seed gives the same readings
however fast it is played.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Accelerometer", "Battery", "DriftingSensor"]


@dataclass
class DriftingSensor:
    """A value that wanders around ``mean`` (mean-reverting random walk) plus read noise.

    ``volatility`` is the drift per square-root second; ``settle`` the seconds it takes
    to pull half-way back to the mean; ``noise`` the standard deviation of one reading.
    """

    rng: random.Random
    mean: float
    volatility: float
    settle: float
    noise: float
    minimum: float
    maximum: float
    value: float = math.nan

    def __post_init__(self) -> None:
        if math.isnan(self.value):
            self.value = self.mean

    def read(self, elapsed: float) -> float:
        """Advance by ``elapsed`` seconds and return one noisy reading."""
        if elapsed > 0:
            pull = 1.0 - 0.5 ** (elapsed / self.settle)
            self.value += (self.mean - self.value) * pull
            self.value += self.rng.gauss(0.0, self.volatility * math.sqrt(elapsed))
            self.value = min(max(self.value, self.minimum), self.maximum)
        reading = self.value + self.rng.gauss(0.0, self.noise)
        return min(max(reading, self.minimum), self.maximum)


@dataclass
class Battery:
    """A Li-ion cell that drains with the load and recharges once it runs low."""

    rng: random.Random
    capacity_mah: float = 2000.0
    load_ma: float = 45.0
    charge_ma: float = 500.0
    charge: float = 87.0
    """State of charge, percent."""
    charging: bool = False

    def step(self, elapsed: float) -> None:
        """Advance by ``elapsed`` seconds."""
        if self.charge <= 10.0:
            self.charging = True
        elif self.charge >= 99.0:
            self.charging = False
        rate = self.charge_ma if self.charging else -self.current_draw()
        self.charge += rate * elapsed / 3600.0 / self.capacity_mah * 100.0
        self.charge = min(max(self.charge, 0.0), 100.0)

    def current_draw(self) -> float:
        """The load now, in mA, with the jitter of a radio waking up now and then."""
        burst = 80.0 if self.rng.random() < 0.05 else 0.0
        return max(0.0, self.rng.gauss(self.load_ma, 3.0) + burst)

    def voltage_mv(self) -> float:
        """Cell voltage: 3.3 V empty to 4.2 V full, a little higher while charging."""
        return 3300.0 + 9.0 * self.charge + (60.0 if self.charging else 0.0)


@dataclass
class Accelerometer:
    """Three axes in g: gravity on z, sensor noise, and now and then a shake."""

    rng: random.Random
    noise: float = 0.004
    shake_chance: float = 0.02

    def read(self) -> list[float]:
        """Return one (x, y, z) reading."""
        shake = 0.5 if self.rng.random() < self.shake_chance else 0.0
        return [
            self.rng.gauss(0.0, self.noise + shake),
            self.rng.gauss(0.0, self.noise + shake),
            1.0 + self.rng.gauss(0.0, self.noise + shake),
        ]
