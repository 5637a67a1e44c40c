"""Frame profiles: the layout of a frame on the wire, declared as data.

A profile names the sync bytes, the header fields in order (their role, width and
byte order), the largest payload, and the checksum (algorithm, byte order, span).
Load one with :func:`protocol.config.load_profile`; compile it with
:func:`protocol.schema.compile_schema`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from protocol.checksums import CHECKSUMS
from protocol.model import ConfigDocument, InvalidKeyError, StrictModel

__all__ = ["ChecksumSpan", "ChecksumSpec", "FrameProfile", "HeaderField", "HeaderRole"]

ByteOrder = Literal["little", "big"]


class HeaderRole(StrEnum):
    """What a header field means. ``cmd`` and ``length`` are required, the others optional."""

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
    """One header field after the sync bytes."""

    role: HeaderRole
    width: Literal[1, 2, 4] = 1
    byte_order: ByteOrder = "little"


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
