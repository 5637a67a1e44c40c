"""Fixtures shared by every test package: the shipped schemas, compiled once, and a
state directory of each test's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.schema import Schema, load_schema
from tests.gateway.broker import mosquitto

__all__ = ["crc_schema", "default_schema", "mosquitto", "own_state_home"]


@pytest.fixture(autouse=True)
def own_state_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``tgw run``'s default state directory, for this test alone (gateways run as
    subprocesses inherit it): never the real home's, never another test's."""
    home = tmp_path_factory.mktemp("state-home")
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    return home


@pytest.fixture(scope="session")
def default_schema() -> Schema:
    return load_schema()


@pytest.fixture(scope="session")
def crc_schema() -> Schema:
    return load_schema("addressed-crc16")
