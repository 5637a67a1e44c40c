"""Every checksum algorithm against its published check value for b"123456789"."""

from __future__ import annotations

import pytest

from protocol.checksums import CHECKSUMS

# Check values from the CRC catalogue (reveng.sourceforge.io/crc-catalogue) and,
# for the sums and Fletcher-16, worked by hand: the bytes 0x31..0x39 sum to 0x1DD.
PUBLISHED = {
    "sum8": (1, 0xDD),
    "sum16": (2, 0x01DD),
    "xor8": (1, 0x31),
    "crc8": (1, 0xF4),
    "crc16-modbus": (2, 0x4B37),
    "crc16-ccitt-false": (2, 0x29B1),
    "crc16-kermit": (2, 0x2189),
    "crc16-xmodem": (2, 0x31C3),
    "crc16-mcrf4xx": (2, 0x6F91),
    "crc16-x25": (2, 0x906E),
    "crc32": (4, 0xCBF43926),
    "fletcher16": (2, 0x1EDE),
}


def test_the_registry_holds_exactly_the_published_algorithms() -> None:
    assert set(CHECKSUMS) == set(PUBLISHED)


@pytest.mark.parametrize(("name", "expected"), PUBLISHED.items(), ids=PUBLISHED.keys())
def test_check_value(name: str, expected: tuple[int, int]) -> None:
    width, check = expected
    algorithm = CHECKSUMS[name]
    assert algorithm.width == width
    assert algorithm.compute(b"123456789") == check


@pytest.mark.parametrize("name", PUBLISHED.keys())
def test_empty_input_and_result_width(name: str) -> None:
    algorithm = CHECKSUMS[name]
    for data in (b"", b"\xff" * 300, bytes(range(256))):
        assert 0 <= algorithm.compute(data) < 1 << (8 * algorithm.width)
