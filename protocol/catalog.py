"""Message catalogs: what each command's payload holds, declared as data.

A catalog maps command values to messages; a message is a name and an ordered list
of fields (integers, floats, fixed-length bytes and strings, fixed-count arrays of
those, bit fields within an integer, enumerations; optional scale, offset and unit).
Load one with :func:`protocol.config.load_catalog`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from protocol.model import ConfigDocument, InvalidKeyError, StrictModel, first_duplicate

__all__ = ["BitField", "Direction", "FieldSpec", "FieldType", "MessageCatalog", "MessageSpec"]

ByteOrder = Literal["little", "big"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class FieldType(StrEnum):
    """The wire types a payload field may have."""

    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    I8 = "i8"
    I16 = "i16"
    I32 = "i32"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"
    BYTES = "bytes"
    STRING = "string"

    @property
    def is_integer(self) -> bool:
        """True for the signed and unsigned integer types."""
        return self.value[0] in "ui"

    @property
    def is_float(self) -> bool:
        """True for ``f32`` and ``f64``."""
        return self.value[0] == "f"

    @property
    def bits(self) -> int:
        """Width in bits of a numeric type (0 for bytes and strings)."""
        return int(self.value[1:]) if self.value[0] in "uif" else 0


def _unique_enum_names(names: dict[int, str] | None) -> dict[int, str] | None:
    labels = list((names or {}).values())
    duplicate = first_duplicate(list(labels))
    if duplicate is not None:
        raise ValueError(f"names must be unique, {labels[duplicate]!r} names two values")
    return names


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"expected a name of letters, digits and '_', got {value!r}")
    return value


class BitField(StrictModel):
    """A run of bits within an unsigned integer field, declared from the least significant bit up.

    A one-bit field decodes to a bool, a wider one to an int (or an enum name).
    """

    name: str
    width: Annotated[int, Field(ge=1, le=64)] = 1
    enum: dict[int, str] | None = None
    description: str = ""

    _name = field_validator("name")(_check_name)

    _enum = field_validator("enum")(_unique_enum_names)


class FieldSpec(StrictModel):
    """One payload field."""

    name: str
    type: FieldType
    byte_order: ByteOrder | None = None
    """``None`` inherits the catalog's byte order."""
    length: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Bytes in a ``bytes`` or ``string`` field (required for those, not allowed otherwise)."""
    count: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Makes the field a fixed-count array of its type."""
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None
    enum: dict[int, str] | None = None
    bits: tuple[BitField, ...] | None = None
    description: str = ""

    _name = field_validator("name")(_check_name)
    _enum = field_validator("enum")(_unique_enum_names)

    @model_validator(mode="after")
    def _check_combinations(self) -> FieldSpec:
        kind = self.type.value
        sized = self.type in (FieldType.BYTES, FieldType.STRING)
        if sized and self.length is None:
            raise InvalidKeyError(("length",), f"required for type {kind!r}")
        if not sized and self.length is not None:
            raise InvalidKeyError(("length",), f"only for 'bytes' and 'string', not {kind!r}")
        for key in ("scale", "offset"):
            if getattr(self, key) is not None and not (self.type.is_integer or self.type.is_float):
                raise InvalidKeyError((key,), f"only for numbers, not {kind!r}")
        if self.scale == 0:
            raise InvalidKeyError(("scale",), "expected a non-zero number, got 0")
        decorations = [name for name in ("enum", "bits") if getattr(self, name) is not None]
        if self.scale is not None or self.offset is not None:
            decorations.append("scale/offset")
        if len(decorations) > 1:
            raise ValueError(f"expected at most one of enum, bits, scale/offset, got {decorations}")
        if self.enum is not None and not self.type.is_integer:
            raise InvalidKeyError(("enum",), f"only for integer types, not {kind!r}")
        if self.bits is not None:
            self._check_bits(self.bits)
        return self

    def _check_bits(self, bits: tuple[BitField, ...]) -> None:
        if not self.type.value.startswith("u"):
            raise InvalidKeyError(
                ("bits",), f"only for unsigned integer types, not {self.type.value!r}"
            )
        used = sum(bit_field.width for bit_field in bits)
        if used > self.type.bits:
            raise InvalidKeyError(
                ("bits",), f"{used} bits declared, {self.type.value} has {self.type.bits}"
            )
        names = [bit_field.name for bit_field in bits]
        duplicate = first_duplicate(list(names))
        if duplicate is not None:
            raise InvalidKeyError(
                ("bits", duplicate, "name"), f"names must be unique, {names[duplicate]!r} is taken"
            )

    def element_size(self) -> int:
        """Bytes of one element on the wire."""
        if self.length is not None:
            return self.length
        return self.type.bits // 8

    @property
    def size(self) -> int:
        """Bytes of the whole field on the wire."""
        return self.element_size() * (self.count or 1)


class Direction(StrEnum):
    """Who sends a message, and when."""

    TELEMETRY = "telemetry"
    """Device to gateway, sent on the device's own schedule."""
    COMMAND = "command"
    """Gateway to device."""
    RESPONSE = "response"
    """Device to gateway, only in reply to a command."""


class MessageSpec(StrictModel):
    """A message: the command value that carries it, its name and its payload fields."""

    cmd: Annotated[int, Field(ge=0, le=0xFFFFFFFF)]
    name: str
    description: str = ""
    direction: Direction = Direction.TELEMETRY
    fields: tuple[FieldSpec, ...] = ()

    _name = field_validator("name")(_check_name)

    @model_validator(mode="after")
    def _unique_fields(self) -> MessageSpec:
        names = [spec.name for spec in self.fields]
        duplicate = first_duplicate(list(names))
        if duplicate is not None:
            raise InvalidKeyError(
                ("fields", duplicate, "name"),
                f"names must be unique, [{names[duplicate]!r}] is taken",
            )
        return self

    @property
    def size(self) -> int:
        """Payload bytes of this message (every field has a fixed size)."""
        return sum(spec.size for spec in self.fields)


class MessageCatalog(ConfigDocument):
    """The messages of one device family, keyed by command value."""

    name: str
    description: str = ""
    byte_order: ByteOrder = "little"
    """The byte order of fields that do not say theirs."""
    messages: tuple[MessageSpec, ...] = ()

    @model_validator(mode="after")
    def _unique_messages(self) -> MessageCatalog:
        for attribute in ("cmd", "name"):
            values = [getattr(message, attribute) for message in self.messages]
            duplicate = first_duplicate(values)
            if duplicate is not None:
                raise InvalidKeyError(
                    ("messages", duplicate, attribute),
                    f"each {attribute} once, [{values[duplicate]!r}] is taken",
                )
        return self
