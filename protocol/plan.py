"""Fast decoding plans, derived from the construct schemas.

construct parses ~36k frames/s when interpreted; a payload made of fixed-size fields
is one ``struct.unpack_from`` away from its values. This module walks a compiled
construct ``Struct`` and, when every field is something it understands (numbers,
fixed bytes, the adapters of :mod:`protocol.fields`, fixed-count arrays of those),
generates a decode function from it. Anything else gets no plan, and the caller
falls back to construct. ``tests/protocol/test_roundtrip.py`` shows both agree.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import construct

from protocol.fields import BitsAdapter, EnumAdapter, ScaleAdapter, TextAdapter

__all__ = ["PayloadPlan", "derive_header_plan", "derive_payload_plan"]

Decode = Callable[[bytes, int], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PayloadPlan:
    """A payload decoder generated from a construct ``Struct``."""

    size: int
    decode: Decode
    """``decode(buffer, offset) -> fields``: the payload starts at ``offset`` in ``buffer``."""
    source: str
    """The generated code, for the curious and for error reports."""


class _NoPlanError(Exception):
    """The schema holds something the planner does not understand."""


class _Planner:
    """Collects struct format characters and value expressions, field by field."""

    def __init__(self) -> None:
        self.formats: list[str] = []
        self.order: str | None = None
        self.count = 0
        self.bindings: dict[str, Any] = {}

    def _take(self, fmt: str, order: str | None = None) -> str:
        if order is not None and struct.calcsize(fmt) > 1:
            if self.order not in (None, order):
                raise _NoPlanError("fields in both byte orders")
            self.order = order
        self.formats.append(fmt)
        self.count += 1
        return f"v{self.count - 1}"

    def _bind(self, value: Any) -> str:
        name = f"_b{len(self.bindings)}"
        self.bindings[name] = value
        return name

    def _number(self, con: Any) -> str:
        if not isinstance(con, construct.FormatField):
            raise _NoPlanError(f"{type(con).__name__} is not a number")
        return self._take(con.fmtstr[1:], con.fmtstr[0])

    def element(self, con: Any) -> str:
        """Return the expression decoding ``con``, reserving its struct format."""
        if isinstance(con, construct.FormatField):
            return self._number(con)
        if type(con) is construct.Bytes and isinstance(con.length, int):
            return self._take(f"{con.length}s")
        if isinstance(con, TextAdapter):
            return f"{self._bind(con.decode_value)}({self._take(f'{con.length}s')})"
        if isinstance(con, ScaleAdapter):
            raw = self._number(con.subcon)
            value = f"{raw} * {con.scale!r} + {con.offset!r}"
            return value if con.decimals is None else f"round({value}, {con.decimals})"
        if isinstance(con, EnumAdapter):
            raw = self._number(con.subcon)
            return f"{self._bind(con.names)}.get({raw}, {raw})"
        if isinstance(con, BitsAdapter):
            return f"{self._bind(con.decode_value)}({self._number(con.subcon)})"
        if isinstance(con, construct.Array) and isinstance(con.count, int):
            return "[" + ", ".join(self.element(con.subcon) for _ in range(con.count)) + "]"
        raise _NoPlanError(f"no plan for {type(con).__name__}")


def derive_payload_plan(payload: Any) -> PayloadPlan | None:
    """Derive a plan from a construct ``Struct`` of named fields, or return None if none fits."""
    planner = _Planner()
    items = []
    try:
        for subcon in payload.subcons:
            if not isinstance(subcon, construct.Renamed) or not subcon.name:
                raise _NoPlanError("unnamed field")
            items.append(f"{subcon.name!r}: {planner.element(subcon.subcon)}")
    except _NoPlanError:
        return None
    layout = struct.Struct((planner.order or "<") + "".join(planner.formats))
    values = "".join(f"v{index}, " for index in range(planner.count))
    body = f"    {values}= _unpack(buffer, offset)\n" if planner.count else ""
    source = f"def decode(buffer, offset):\n{body}    return {{{', '.join(items)}}}\n"
    namespace: dict[str, Any] = {"_unpack": layout.unpack_from, **planner.bindings}
    exec(compile(source, "<payload plan>", "exec"), namespace)
    return PayloadPlan(size=layout.size, decode=namespace["decode"], source=source)


def _unwrap_number(con: Any) -> Any:
    while isinstance(con, construct.Rebuild | construct.Default):
        con = con.subcon
    if not isinstance(con, construct.FormatField):
        raise TypeError(f"header fields must be numbers, got {type(con).__name__}")
    return con


def derive_header_plan(body: Any) -> tuple[Callable[[bytes, int], tuple[int, ...]], list[str]]:
    """Derive ``unpack(buffer, offset_after_sync)`` and the field names from a frame body Struct.

    The body is ``Const(sync)``, then named numbers (possibly ``Rebuild``/``Default``),
    then the payload; the payload is left out.
    """
    names: list[str] = []
    formats: list[str] = []
    for subcon in body.subcons:
        if isinstance(subcon, construct.Const):
            continue
        if subcon.name == "payload":
            break
        names.append(subcon.name)
        formats.append(_unwrap_number(subcon.subcon).fmtstr)
    orders = {fmt[0] for fmt in formats if struct.calcsize(fmt) > 1}
    if len(orders) <= 1:
        layout = struct.Struct((orders.pop() if orders else "<") + "".join(f[1:] for f in formats))
        return layout.unpack_from, names
    parts = [
        (struct.Struct(fmt), sum(struct.calcsize(f) for f in formats[:i]))
        for i, fmt in enumerate(formats)
    ]

    def unpack(buffer: bytes, offset: int) -> tuple[int, ...]:
        return tuple(layout.unpack_from(buffer, offset + skip)[0] for layout, skip in parts)

    return unpack, names
