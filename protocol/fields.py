"""construct building blocks for payload fields: the adapters that give raw values meaning.

Each adapter keeps its conversion in one plain method (``decode_value`` /
``encode_value``), so the fast decoding plan in :mod:`protocol.plan` can reuse the very
same function instead of restating it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import construct

from protocol.catalog import BitField, FieldSpec, FieldType

__all__ = [
    "BitsAdapter",
    "EnumAdapter",
    "ScaleAdapter",
    "TextAdapter",
    "ValueAdapter",
    "field_construct",
]

_FORMAT_CHARS = {
    FieldType.U8: "B",
    FieldType.U16: "H",
    FieldType.U32: "L",
    FieldType.U64: "Q",
    FieldType.I8: "b",
    FieldType.I16: "h",
    FieldType.I32: "l",
    FieldType.I64: "q",
    FieldType.F32: "f",
    FieldType.F64: "d",
}


def decimals_of(*numbers: float) -> int | None:
    """Decimal places needed to write ``numbers`` exactly in short form, or None if over 9.

    ``decimals_of(0.01) == 2``, ``decimals_of(1e-07) == 7``, ``decimals_of(100.0) == 0``.
    """
    places = 0
    for number in numbers:
        exponent = Decimal(repr(float(number))).normalize().as_tuple().exponent
        if not isinstance(exponent, int):  # nan or infinity
            return None
        places = max(places, -exponent)
    return places if places <= 9 else None


class ValueAdapter(construct.Adapter):  # type: ignore[misc]
    """An adapter whose conversions are plain methods, ``decode_value`` and ``encode_value``."""

    def decode_value(self, raw: Any) -> Any:
        """Return the engineering value of the raw wire value."""
        raise NotImplementedError

    def encode_value(self, value: Any) -> Any:
        """Return the raw wire value of an engineering value; raise a ``ConstructError``."""
        raise NotImplementedError

    def _decode(self, obj: Any, context: Any, path: str) -> Any:
        return self.decode_value(obj)

    def _encode(self, obj: Any, context: Any, path: str) -> Any:
        try:
            return self.encode_value(obj)
        except construct.ConstructError as exc:
            raise type(exc)(str(exc), path=path) from None
        except (TypeError, ValueError) as exc:
            raise construct.ConstructError(f"cannot encode {obj!r}: {exc}", path=path) from None


class ScaleAdapter(ValueAdapter):
    """``value = raw * scale + offset``.

    For integer wire types the value is rounded to the decimal places of the scale and
    offset (a raw 2150 with scale 0.01 reads 21.5, not 21.500000000000004).
    """

    def __init__(self, subcon: Any, scale: float, offset: float, *, integer: bool) -> None:
        super().__init__(subcon)
        self.scale = scale
        self.offset = offset
        self.integer = integer
        self.decimals = decimals_of(scale, offset) if integer else None

    def decode_value(self, raw: float) -> float:
        """Return the engineering value of ``raw``."""
        value = raw * self.scale + self.offset
        return value if self.decimals is None else round(value, self.decimals)

    def encode_value(self, value: float) -> float:
        """Return the raw wire value for ``value`` (rounded to an integer for integer types)."""
        raw = (value - self.offset) / self.scale
        return round(raw) if self.integer else raw


class EnumAdapter(ValueAdapter):
    """An integer shown as its name; a value the catalog does not name stays an integer."""

    def __init__(self, subcon: Any, names: Mapping[int, str]) -> None:
        super().__init__(subcon)
        self.names = dict(names)
        self.values = {name: value for value, name in names.items()}

    def decode_value(self, raw: int) -> str | int:
        """Return the name of ``raw``, or ``raw`` itself when it has none."""
        return self.names.get(raw, raw)

    def encode_value(self, value: str | int) -> int:
        """Return the wire value for a name (or an integer, passed through)."""
        if isinstance(value, str):
            if value not in self.values:
                raise construct.MappingError(
                    f"unknown name {value!r}, expected one of {sorted(self.values)}"
                )
            return self.values[value]
        return value


class BitsAdapter(ValueAdapter):
    """An unsigned integer split into named bit fields, least significant bit first."""

    def __init__(self, subcon: Any, bit_fields: tuple[BitField, ...]) -> None:
        super().__init__(subcon)
        layout = []
        shift = 0
        for bit_field in bit_fields:
            layout.append((bit_field.name, shift, (1 << bit_field.width) - 1, bit_field.enum))
            shift += bit_field.width
        self.layout = tuple(layout)

    def decode_value(self, raw: int) -> dict[str, bool | int | str]:
        """Return the named bit fields of ``raw``: bools for single bits, else ints or names."""
        fields: dict[str, bool | int | str] = {}
        for name, shift, mask, names in self.layout:
            part = (raw >> shift) & mask
            fields[name] = (
                bool(part)
                if mask == 1 and names is None
                else (names.get(part, part) if names else part)
            )
        return fields

    def encode_value(self, value: Mapping[str, bool | int | str]) -> int:
        """Return the integer holding the named bit fields (missing ones are 0)."""
        unknown = set(value) - {name for name, *_ in self.layout}
        if unknown:
            raise construct.MappingError(f"unknown bit fields {sorted(unknown)}")
        raw = 0
        for name, shift, mask, names in self.layout:
            part = value.get(name, 0)
            if isinstance(part, str):
                reverse = {label: number for number, label in (names or {}).items()}
                if part not in reverse:
                    raise construct.MappingError(f"bit field {name!r}: unknown name {part!r}")
                part = reverse[part]
            part = int(part)
            if not 0 <= part <= mask:
                raise construct.MappingError(
                    f"bit field {name!r}: {part} does not fit {mask.bit_length()} bits"
                )
            raw |= part << shift
        return raw


class TextAdapter(ValueAdapter):
    """A fixed-length, NUL-padded UTF-8 string; text stops at the first NUL."""

    def __init__(self, length: int) -> None:
        super().__init__(construct.Bytes(length))
        self.length = length

    @staticmethod
    def decode_value(raw: bytes) -> str:
        """Return the text before the first NUL; bytes that are not UTF-8 become U+FFFD."""
        return raw.partition(b"\0")[0].decode("utf-8", "replace")

    def encode_value(self, value: str) -> bytes:
        """Return ``value`` in UTF-8, padded with NULs to the field's length."""
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        data = value.encode("utf-8")
        if len(data) > self.length:
            raise construct.StringError(f"{len(data)} bytes of text, the field holds {self.length}")
        return data.ljust(self.length, b"\0")


def _element(spec: FieldSpec, byte_order: str) -> Any:
    if spec.type is FieldType.BYTES:
        return construct.Bytes(spec.length)
    if spec.type is FieldType.STRING:
        assert spec.length is not None
        return TextAdapter(spec.length)
    endian = "<" if (spec.byte_order or byte_order) == "little" else ">"
    number = construct.FormatField(endian, _FORMAT_CHARS[spec.type])
    if spec.scale is not None or spec.offset is not None:
        scale = 1.0 if spec.scale is None else spec.scale
        offset = 0.0 if spec.offset is None else spec.offset
        return ScaleAdapter(number, scale, offset, integer=spec.type.is_integer)
    if spec.enum is not None:
        return EnumAdapter(number, spec.enum)
    if spec.bits is not None:
        return BitsAdapter(number, spec.bits)
    return number


def field_construct(spec: FieldSpec, byte_order: str) -> Any:
    """Return the construct for one field (without its name); arrays wrap their element."""
    element = _element(spec, byte_order)
    return element if spec.count is None else construct.Array(spec.count, element)
