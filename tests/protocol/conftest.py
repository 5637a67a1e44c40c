"""Shared fixtures and helpers for the protocol tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.config import load_catalog, load_profile
from protocol.schema import Schema, compile_schema

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def every_field_schema() -> Schema:
    return compile_schema(load_profile(), load_catalog(DATA / "every-field.toml"))
