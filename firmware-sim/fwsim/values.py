"""Field values for any catalog: the sensor reading where one fits, a plausible value otherwise.

The simulator works with any catalog. A field whose name the device has a reading for
(``temperature``, ``battery`` ...) gets that reading, fitted to what the field can
carry; any other field gets a random value of its type. Either way the value encodes.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Mapping
from typing import Any

from protocol.catalog import FieldSpec, FieldType, MessageSpec

__all__ = ["fit", "message_values", "random_value"]


def _raw_range(spec: FieldSpec) -> tuple[float, float]:
    bits = spec.type.bits
    if spec.type.is_float:
        limit = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0] if bits == 32 else 1.0e308
        return -limit, limit
    if spec.type.value.startswith("u"):
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _value_range(spec: FieldSpec) -> tuple[float, float]:
    low, high = _raw_range(spec)
    scale = 1.0 if spec.scale is None else spec.scale
    offset = 0.0 if spec.offset is None else spec.offset
    ends = sorted((low * scale + offset, high * scale + offset))
    return ends[0], ends[1]


def random_value(spec: FieldSpec, rng: random.Random) -> Any:
    """A random value that ``spec`` can encode (a list for arrays)."""
    if spec.count is not None:
        return [_random_element(spec, rng) for _ in range(spec.count)]
    return _random_element(spec, rng)


def _random_element(spec: FieldSpec, rng: random.Random) -> Any:
    if spec.type is FieldType.BYTES:
        return rng.randbytes(spec.element_size())
    if spec.type is FieldType.STRING:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(spec.element_size()))
    if spec.enum is not None:
        return rng.choice(list(spec.enum.values()))
    if spec.bits is not None:
        return {bit.name: rng.randrange(1 << bit.width) for bit in spec.bits}
    low, high = _raw_range(spec)
    raw = rng.uniform(-1000.0, 1000.0) if spec.type.is_float else rng.randint(int(low), int(high))
    scale = 1.0 if spec.scale is None else spec.scale
    offset = 0.0 if spec.offset is None else spec.offset
    return raw if spec.scale is None and spec.offset is None else raw * scale + offset


def fit(spec: FieldSpec, reading: Any, rng: random.Random) -> Any:
    """Return ``reading`` as a value ``spec`` can encode, or a random one if it cannot be."""
    if spec.count is not None:
        if not isinstance(reading, list | tuple) or len(reading) != spec.count:
            return random_value(spec, rng)
        return [_fit_element(spec, item, rng) for item in reading]
    return _fit_element(spec, reading, rng)


def _fit_element(spec: FieldSpec, reading: Any, rng: random.Random) -> Any:
    if spec.type is FieldType.STRING:
        text = str(reading)
        while len(text.encode("utf-8")) > spec.element_size():
            text = text[:-1]
        return text
    if spec.type is FieldType.BYTES:
        data = bytes(reading) if isinstance(reading, bytes | bytearray) else b""
        return data[: spec.element_size()].ljust(spec.element_size(), b"\0")
    if spec.enum is not None:
        return reading if reading in spec.enum.values() else _random_element(spec, rng)
    if spec.bits is not None:
        if not isinstance(reading, Mapping):
            return _random_element(spec, rng)
        return {bit.name: reading.get(bit.name, 0) for bit in spec.bits}
    if not isinstance(reading, int | float) or isinstance(reading, bool):
        return _random_element(spec, rng)
    low, high = _value_range(spec)
    value = min(max(float(reading), low), high)
    if spec.type.is_integer and spec.scale is None and spec.offset is None:
        return round(value)
    return value


def message_values(
    message: MessageSpec, readings: Mapping[str, Any], rng: random.Random
) -> dict[str, Any]:
    """Values for every field of ``message``: readings by field name, random otherwise."""
    return {
        spec.name: fit(spec, readings[spec.name], rng)
        if spec.name in readings
        else random_value(spec, rng)
        for spec in message.fields
    }
