"""Compile a profile and a catalog into construct schemas, once, at load time.

:func:`compile_schema` is the one place where data becomes code. Its result,
:class:`Schema`, holds the construct schemas (the reference for both parsing and
building) and the fast plans derived from them (see :mod:`protocol.plan`), which the
stream decoder uses. Build a :class:`protocol.decoder.StreamDecoder` or a
:class:`protocol.encoder.FrameEncoder` from it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import construct

from protocol.catalog import MessageCatalog, MessageSpec
from protocol.checksums import CHECKSUMS
from protocol.config import load_catalog, load_profile
from protocol.errors import ConfigError
from protocol.fields import field_construct
from protocol.plan import PayloadPlan, derive_header_plan, derive_payload_plan
from protocol.profile import FrameProfile, HeaderRole

__all__ = ["MessageSchema", "Schema", "compile_schema", "load_schema", "plain"]

_WIDTH_CHARS = {1: "B", 2: "H", 4: "L"}


def _number(width: int, byte_order: str) -> Any:
    return construct.FormatField("<" if byte_order == "little" else ">", _WIDTH_CHARS[width])


def plain(value: Any) -> Any:
    """Turn construct containers into plain dicts and lists (dropping construct's ``_io``)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if not key.startswith("_")}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class MessageSchema:
    """One message compiled: its spec, its construct payload schema and its fast plan."""

    spec: MessageSpec
    payload: Any
    """The construct ``Struct`` of the payload: the reference for parsing and building."""
    plan: PayloadPlan | None
    """The struct-based plan derived from ``payload``, or None when none could be derived."""

    @property
    def size(self) -> int:
        """Payload bytes of this message."""
        return self.spec.size

    def decode_with_construct(self, payload: bytes) -> dict[str, Any]:
        """Parse ``payload`` with construct alone (the slow reference path)."""
        result: dict[str, Any] = plain(self.payload.parse(payload))
        return result

    def decoder(self) -> Callable[[bytes, int], dict[str, Any]]:
        """Return the fastest ``decode(buffer, offset) -> fields`` for this message."""
        if self.plan is not None:
            return self.plan.decode
        parse = self.payload.parse
        size = self.size

        def decode(buffer: bytes, offset: int) -> dict[str, Any]:
            fields: dict[str, Any] = plain(parse(buffer[offset : offset + size]))
            return fields

        return decode


@dataclass(frozen=True, slots=True)
class Schema:
    """A profile and a catalog compiled together. Immutable; share it freely."""

    profile: FrameProfile
    catalog: MessageCatalog
    frame: Any
    """construct: ``Struct("body" / RawCopy(sync, header, payload), "checksum" / Checksum)``."""
    messages: Mapping[int, MessageSchema]
    names: Mapping[str, MessageSchema]
    checksum: Callable[[bytes], int]
    checksum_struct: struct.Struct
    header_unpack: Callable[[bytes, int], tuple[int, ...]]
    """``header_unpack(buffer, offset_after_sync)`` -> header values in ``header_keys`` order."""
    header_keys: tuple[str, ...]
    """The header fields' names (:attr:`protocol.profile.HeaderField.key`), in wire order."""

    def parse_frame_with_construct(self, frame: bytes) -> dict[str, Any]:
        """Parse one complete frame with construct alone; raise ``construct.ConstructError``.

        Returns the header values by name, ``payload`` and, for a known command,
        ``message`` and ``fields``. The reference the fast paths are tested against.
        """
        parsed = self.frame.parse(frame)
        values = plain(parsed.body.value)
        message = self.messages.get(values["cmd"])
        if message is not None:
            values["message"] = message.spec.name
            values["fields"] = message.decode_with_construct(values["payload"])
        return dict(values)


def _frame_construct(profile: FrameProfile) -> Any:
    body_fields: list[Any] = [construct.Const(profile.sync)]
    for header_field in profile.header:
        number = _number(header_field.width, header_field.byte_order)
        if header_field.role is HeaderRole.LENGTH:
            number = construct.Rebuild(number, construct.len_(construct.this.payload))
        elif header_field.role is not HeaderRole.CMD:
            number = construct.Default(number, 0)
        body_fields.append(header_field.key / number)
    body_fields.append("payload" / construct.Bytes(construct.this.length))
    algorithm = CHECKSUMS[profile.checksum.algorithm]
    start = profile.checksum_start
    return construct.Struct(
        "body" / construct.RawCopy(construct.Struct(*body_fields)),
        "checksum"
        / construct.Checksum(
            _number(algorithm.width, profile.checksum.byte_order),
            algorithm.compute,
            lambda this: this.body.data[start:],
        ),
    )


def _check_fits(profile: FrameProfile, catalog: MessageCatalog) -> None:
    cmd_field = profile.field(HeaderRole.CMD)
    assert cmd_field is not None
    for index, message in enumerate(catalog.messages):
        if message.cmd >= 1 << (8 * cmd_field.width):
            raise ConfigError(
                catalog.source,
                f"messages[{index}].cmd",
                f"{message.cmd} does not fit the {cmd_field.width}-byte cmd field "
                f"of profile {profile.name!r} ({profile.source})",
            )
        if message.size > profile.max_payload:
            raise ConfigError(
                catalog.source,
                f"messages[{index}]",
                f"message {message.name!r} has {message.size} payload bytes, "
                f"profile {profile.name!r} ({profile.source}) allows at most {profile.max_payload}",
            )


def compile_schema(profile: FrameProfile, catalog: MessageCatalog) -> Schema:
    """Compile ``profile`` and ``catalog``; raise ``ConfigError`` if they do not fit together."""
    _check_fits(profile, catalog)
    messages: dict[int, MessageSchema] = {}
    for message in catalog.messages:
        payload = construct.Struct(
            *(spec.name / field_construct(spec, catalog.byte_order) for spec in message.fields)
        )
        messages[message.cmd] = MessageSchema(message, payload, derive_payload_plan(payload))
    frame = _frame_construct(profile)
    body = frame.subcons[0].subcon.subcon  # Renamed("body") -> RawCopy -> Struct
    header_unpack, header_keys = derive_header_plan(body)
    checksum_construct = frame.subcons[1].subcon.checksumfield
    return Schema(
        profile=profile,
        catalog=catalog,
        frame=frame,
        messages=messages,
        names={schema.spec.name: schema for schema in messages.values()},
        checksum=CHECKSUMS[profile.checksum.algorithm].compute,
        checksum_struct=struct.Struct(checksum_construct.fmtstr),
        header_unpack=header_unpack,
        header_keys=tuple(header_keys),
    )


def load_schema(profile: str = "default", catalog: str = "default") -> Schema:
    """Load a profile and a catalog (file paths or shipped names) and compile them."""
    return compile_schema(load_profile(profile), load_catalog(catalog))
