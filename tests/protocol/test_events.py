"""Events are built with keywords only, so two fields of one type cannot be swapped."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from protocol.events import ErrorKind, Frame, StreamError


def test_frames_are_built_with_keywords_only() -> None:
    values: list[Any] = [0, 1, None, {}, b"", b""]
    with pytest.raises(TypeError):
        Frame(*values)  # type: ignore[call-arg]  # mypy refuses it too
    frame = Frame(offset=0, cmd=1, message=None, fields={}, payload=b"", raw=b"")
    assert frame.header == {}
    assert pickle.loads(pickle.dumps(frame)) == frame
    assert frame._replace(offset=5).offset == 5


def test_stream_errors_are_built_with_keywords_only() -> None:
    values: list[Any] = [ErrorKind.GARBAGE, 0, 1, "skipped 1 byte"]
    with pytest.raises(TypeError):
        StreamError(*values)  # type: ignore[call-arg]  # mypy refuses it too
    error = StreamError(kind=ErrorKind.GARBAGE, offset=0, size=1, detail="skipped 1 byte")
    assert error.cmd is None
    assert pickle.loads(pickle.dumps(error)) == error
