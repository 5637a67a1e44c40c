"""Frame profiles: the layout of a frame on the wire, declared as data.

A profile names the sync bytes, the header fields in order (each a role or a name,
a width and a byte order), the largest payload, and the checksum (algorithm, byte
order, span).
Load one with :func:`protocol.config.load_profile`; compile it with
:func:`protocol.schema.compile_schema`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from protocol.checksums import CHECKSUMS
from protocol.model import ConfigDocument, InvalidKeyError, StrictModel, first_duplicate
from protocol.records import RESERVED_KEYS

__all__ = ["ChecksumSpan", "ChecksumSpec", "FrameProfile", "HeaderField", "HeaderRole"]

ByteOrder = Literal["little", "big"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class HeaderRole(StrEnum):
    """A header field the decoder or the gateway gives a meaning to.

    ``cmd`` and ``length`` are required, the others optional. Every header field but
    ``cmd`` and ``length`` reaches :attr:`protocol.events.Frame.header` under its name
    (a role's name is its value), whether it has a role or only a name.
    """

    CMD = "cmd"
    LENGTH = "length"
    SEQUENCE = "sequence"
    ADDRESS = "address"


class ChecksumSpan(StrEnum):
    """Where the checksummed bytes start; they always end with the last payload byte."""

    FRAME = "frame"
    """From the first sync byte."""
    AFTER_SYNC = "after_sync"
    """From the first byte after the sync bytes."""


class HeaderField(StrictModel):
    """One header field after the sync bytes: a role, or a name for data with no role."""

    role: HeaderRole | None = None
    name: str | None = None
    width: Literal[1, 2, 4] = 1
    byte_order: ByteOrder = "little"

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _NAME.match(value):
            raise ValueError(f"expected a name of letters, digits and '_', got {value!r}")
        if value in HeaderRole.__members__.values():
            raise ValueError(f"{value!r} is a role: write role = {value!r}")
        if value in RESERVED_KEYS:
            raise ValueError(f"{value!r} is a key of the records and envelopes themselves")
        return value

    @model_validator(mode="after")
    def _role_or_name(self) -> HeaderField:
        if (self.role is None) == (self.name is None):
            given = "neither" if self.role is None else f"both ({self.role.value!r}, {self.name!r})"
            raise ValueError(f"expected a role or a name, got {given}")
        return self

    @property
    def key(self) -> str:
        """The field's name in frames, records and envelopes: its role's value, or its name."""
        return self.role.value if self.role is not None else str(self.name)


class ChecksumSpec(StrictModel):
    """The trailing checksum: which algorithm, stored in which byte order, over which span."""

    algorithm: str
    byte_order: ByteOrder = "little"
    span: ChecksumSpan = ChecksumSpan.FRAME

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in CHECKSUMS:
            raise ValueError(f"expected one of {', '.join(sorted(CHECKSUMS))}, got {value!r}")
        return value

    @property
    def width(self) -> int:
        """Width of the checksum on the wire, in bytes."""
        return CHECKSUMS[self.algorithm].width


class FrameProfile(ConfigDocument):
    """A frame layout: ``sync | header fields | payload | checksum``."""

    name: str
    description: str = ""
    sync: bytes
    header: tuple[HeaderField, ...]
    max_payload: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 256
    checksum: ChecksumSpec

    @field_validator("sync", mode="before")
    @classmethod
    def _parse_sync(cls, value: object) -> bytes:
        if not isinstance(value, str):
            raise ValueError(f"expected a hex string such as 'AA 55', got {value!r}")
        try:
            sync = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"expected a hex string such as 'AA 55', got {value!r}") from None
        if not 1 <= len(sync) <= 4:
            raise ValueError(f"expected 1 to 4 sync bytes, got {len(sync)}")
        return sync

    @model_validator(mode="after")
    def _check_header(self) -> FrameProfile:
        roles = [field.role for field in self.header]
        for role in HeaderRole:
            count = roles.count(role)
            required = role in (HeaderRole.CMD, HeaderRole.LENGTH)
            if count > 1 or (required and count == 0):
                raise InvalidKeyError(
                    ("header",),
                    f"expected {'exactly' if required else 'at most'} one field with "
                    f"role {role.value!r}, got {count}",
                )
        keys = [field.key for field in self.header]
        duplicate = first_duplicate(list(keys))
        if duplicate is not None:
            raise InvalidKeyError(
                ("header", duplicate, "name"), f"names must be unique, {keys[duplicate]!r} is taken"
            )
        length_width = self.field(HeaderRole.LENGTH).width  # type: ignore[union-attr]
        if self.max_payload >= 1 << (8 * length_width):
            raise InvalidKeyError(
                ("max_payload",),
                f"{self.max_payload} does not fit the {length_width}-byte length field",
            )
        return self

    def field(self, role: HeaderRole) -> HeaderField | None:
        """Return the header field with ``role``, or ``None`` if the profile has none."""
        for header_field in self.header:
            if header_field.role is role:
                return header_field
        return None

    @property
    def header_size(self) -> int:
        """Bytes from the first sync byte to the first payload byte."""
        return len(self.sync) + sum(field.width for field in self.header)

    @property
    def overhead(self) -> int:
        """Bytes a frame adds to its payload: sync, header and checksum."""
        return self.header_size + self.checksum.width

    @property
    def checksum_start(self) -> int:
        """Offset in the frame of the first checksummed byte."""
        return 0 if self.checksum.span is ChecksumSpan.FRAME else len(self.sync)
