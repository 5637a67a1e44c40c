"""Fixtures shared by every test package: the shipped schemas, compiled once."""

from __future__ import annotations

import pytest

from protocol.schema import Schema, load_schema
from tests.gateway.broker import mosquitto

__all__ = ["crc_schema", "default_schema", "mosquitto"]


@pytest.fixture(scope="session")
def default_schema() -> Schema:
    return load_schema()


@pytest.fixture(scope="session")
def crc_schema() -> Schema:
    return load_schema("addressed-crc16")
