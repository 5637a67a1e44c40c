"""What the stream decoder reports: frames and stream errors, and its statistics.

Events are immutable records. They are ``NamedTuple`` rather than frozen dataclasses
because the decoder makes one per frame on its hot path, and a frozen dataclass costs
three times as much to build; they match with ``match``/``case Frame(...)`` all the same.
:class:`Frame` and :class:`StreamError` take keywords only (mypy and the interpreter
both refuse positions, so two fields of one type cannot be swapped silently); the
decoder alone builds frames from a tuple in field order, for speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = ["DecoderStatistics", "ErrorKind", "Event", "Frame", "StreamError"]


class ErrorKind(StrEnum):
    """Why bytes in the stream did not become a frame."""

    GARBAGE = "garbage"
    """Bytes skipped while hunting for a frame, outside any rejected candidate frame
    (``size`` says how many)."""
    BAD_LENGTH = "bad_length"
    """A sync and a header whose length exceeds the profile's maximum."""
    BAD_CHECKSUM = "bad_checksum"
    """A sync, a plausible header and a payload, but the checksum does not match."""
    PAYLOAD_MISMATCH = "payload_mismatch"
    """A frame that passed its checksum, but whose payload length does not fit its known
    command: a firmware/catalog mismatch, or a false sync whose checksum matched by chance.
    The hunt resumes one byte after its sync, as after any other failure."""
    TRUNCATED = "truncated"
    """The input ended inside what would have been a frame."""


class _FrameValues(NamedTuple):
    offset: int
    """Offset of the first sync byte in the stream."""
    cmd: int
    message: str | None
    fields: dict[str, Any]
    payload: bytes
    raw: bytes
    header: dict[str, int]


class Frame(_FrameValues):
    """A frame that passed its checksum. Build it with keywords only.

    ``message`` is None (and ``fields`` empty) for a command the catalog does not know;
    ``payload`` always holds the raw payload bytes and ``raw`` the whole frame.
    ``header`` holds the header fields other than ``cmd`` and ``length``, by name
    (``{"sequence": 7, "address": 3}``), in the profile's order; empty when it has none.
    """

    __slots__ = ()

    def __new__(
        cls,
        *,
        offset: int,
        cmd: int,
        message: str | None,
        fields: dict[str, Any],
        payload: bytes,
        raw: bytes,
        header: dict[str, int] | None = None,
    ) -> Frame:
        values = (offset, cmd, message, fields, payload, raw, {} if header is None else header)
        return tuple.__new__(cls, values)

    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, Any]]:
        return (), self._asdict()


class _StreamErrorValues(NamedTuple):
    kind: ErrorKind
    offset: int
    """Offset in the stream of the first byte concerned."""
    size: int
    """Bytes concerned: skipped (garbage), or the extent of the rejected candidate frame.
    The decoder hunts through a candidate's bytes again; those it skips are counted in
    ``bytes_skipped`` but not reported again as garbage: one fault, one error."""
    detail: str
    cmd: int | None


class StreamError(_StreamErrorValues):
    """Bytes that did not make a frame, and why. Reported, counted, never raised.
    Build it with keywords only."""

    __slots__ = ()

    def __new__(
        cls, *, kind: ErrorKind, offset: int, size: int, detail: str, cmd: int | None = None
    ) -> StreamError:
        return tuple.__new__(cls, (kind, offset, size, detail, cmd))

    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, Any]]:
        return (), self._asdict()


Event = Frame | StreamError


@dataclass(frozen=True, slots=True)
class DecoderStatistics:
    """Counts since the decoder was made. Every byte fed is in exactly one of
    ``bytes_in_frames``, ``bytes_skipped`` or ``bytes_pending``.
    """

    bytes_fed: int
    frames: int
    """Frames that passed their checksum and decoded (unknown commands included)."""
    unknown_frames: int
    """Of ``frames``, those whose command the catalog does not know."""
    errors: Mapping[ErrorKind, int]
    """Events by kind (garbage counts runs; ``bytes_skipped`` counts their bytes)."""
    bytes_in_frames: int
    bytes_skipped: int
    bytes_pending: int
    """Bytes held, waiting for the rest of a frame."""
