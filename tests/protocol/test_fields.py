"""Scaled fields read as the short decimal their scale allows, however small the scale."""

from __future__ import annotations

import pytest

from protocol.catalog import MessageCatalog
from protocol.config import load_profile
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.events import Frame
from protocol.fields import decimals_of
from protocol.schema import compile_schema


@pytest.mark.parametrize(
    ("numbers", "places"),
    [
        ((0.01,), 2),
        ((0.1, -40.0), 1),
        ((100.0,), 0),
        ((1e-05,), 5),
        ((1e-07,), 7),
        ((2.5e-06, 0.5), 7),
        ((1e-09,), 9),
        ((1e-10,), None),  # more places than a double holds sensibly
        ((1e16,), 0),
        ((0.1 + 0.2,), None),  # 0.30000000000000004
        ((float("inf"),), None),
    ],
)
def test_decimals_of(numbers: tuple[float, ...], places: int | None) -> None:
    assert decimals_of(*numbers) == places


def test_a_gps_latitude_scaled_by_1e_7_reads_as_written() -> None:
    catalog = MessageCatalog.model_validate(
        {
            "name": "gps",
            "messages": [
                {
                    "cmd": 0x30,
                    "name": "position",
                    "fields": [
                        {"name": "latitude", "type": "i32", "scale": 1e-7},
                        {"name": "longitude", "type": "i32", "scale": 1e-7},
                    ],
                }
            ],
        }
    )
    schema = compile_schema(load_profile(), catalog)
    fields = {"latitude": 13.0549411, "longitude": -59.6157216}
    [frame] = StreamDecoder(schema).feed(FrameEncoder(schema).encode("position", fields))
    assert isinstance(frame, Frame)
    assert frame.fields == fields  # not 13.054941099999999
    assert schema.names["position"].decode_with_construct(frame.payload) == fields
