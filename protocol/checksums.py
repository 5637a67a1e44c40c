"""The checksum registry: every algorithm a frame profile may name.

CRCs come from ``crcmod`` (its C extension); the simple sums are one line each.
Each entry knows its width in bytes; a profile adds the byte order and the span.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import crcmod
import crcmod.predefined

__all__ = ["CHECKSUMS", "ChecksumAlgorithm"]

ChecksumFunction = Callable[[bytes], int]


@dataclass(frozen=True, slots=True)
class ChecksumAlgorithm:
    """A named checksum: ``compute(data)`` returns an unsigned integer of ``width`` bytes."""

    name: str
    width: int
    compute: ChecksumFunction
    description: str


def _sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def _sum16(data: bytes) -> int:
    return sum(data) & 0xFFFF


def _xor8(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def _fletcher16(data: bytes) -> int:
    """Fletcher-16: two running sums modulo 255; the second sum is the high byte."""
    low = high = 0
    for byte in data:
        low = (low + byte) % 255
        high = (high + low) % 255
    return (high << 8) | low


def _crc(poly: int, init: int, *, rev: bool, xor_out: int) -> ChecksumFunction:
    function: ChecksumFunction = crcmod.mkCrcFun(poly, initCrc=init, rev=rev, xorOut=xor_out)
    return function


def _predefined(name: str) -> ChecksumFunction:
    function: ChecksumFunction = crcmod.predefined.mkPredefinedCrcFun(name)
    return function


CHECKSUMS: dict[str, ChecksumAlgorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        ChecksumAlgorithm("sum8", 1, _sum8, "sum of the bytes, modulo 256"),
        ChecksumAlgorithm("sum16", 2, _sum16, "sum of the bytes, modulo 65536"),
        ChecksumAlgorithm("xor8", 1, _xor8, "xor of the bytes"),
        ChecksumAlgorithm("crc8", 1, _predefined("crc-8"), "CRC-8 (poly 0x07, SMBus)"),
        ChecksumAlgorithm("crc16-modbus", 2, _predefined("modbus"), "CRC-16/MODBUS"),
        ChecksumAlgorithm(
            "crc16-ccitt-false",
            2,
            _predefined("crc-ccitt-false"),
            "CRC-16/CCITT-FALSE (IBM-3740)",
        ),
        ChecksumAlgorithm("crc16-kermit", 2, _predefined("kermit"), "CRC-16/KERMIT"),
        ChecksumAlgorithm("crc16-xmodem", 2, _predefined("xmodem"), "CRC-16/XMODEM"),
        ChecksumAlgorithm(
            "crc16-mcrf4xx",
            2,
            _crc(0x11021, 0xFFFF, rev=True, xor_out=0x0000),
            "CRC-16/MCRF4XX (the X.25 family, no final xor)",
        ),
        ChecksumAlgorithm("crc16-x25", 2, _predefined("x-25"), "CRC-16/X-25 (IBM-SDLC)"),
        ChecksumAlgorithm("crc32", 4, _predefined("crc-32"), "CRC-32 (ISO-HDLC)"),
        ChecksumAlgorithm(
            "fletcher16", 2, _fletcher16, "Fletcher-16: two running 8-bit sums mod 255"
        ),
    )
}
