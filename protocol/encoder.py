"""Building frames from messages, with the same construct schemas the decoder trusts.

The simulator, the tests and commands sent down to devices all build frames here::

    encoder = FrameEncoder(load_schema("addressed-crc16"))
    frame = encoder.encode("environment", {"temperature": 21.5, "humidity": 40.0,
                                           "pressure": 1013.2}, header={"sequence": 7})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import construct

from protocol.errors import EncodeError
from protocol.profile import HeaderRole
from protocol.schema import Schema

__all__ = ["FrameEncoder"]


class FrameEncoder:
    """Encode messages of ``schema.catalog`` into frames of ``schema.profile``."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._header_keys = [
            key for key in schema.header_keys if key not in (HeaderRole.CMD, HeaderRole.LENGTH)
        ]

    def encode(
        self,
        message: str | int,
        fields: Mapping[str, Any] | None = None,
        *,
        header: Mapping[str, int] | None = None,
    ) -> bytes:
        """Return the frame carrying ``message`` (a name or a cmd value) with ``fields``.

        Values are engineering values (scaled, enum names, bit-field dicts), as the
        decoder returns them. ``header`` gives header fields by name, as
        :attr:`protocol.events.Frame.header` holds them (``{"sequence": 3, "flags": 1}``);
        those not given are 0; ``cmd`` and ``length`` are the encoder's. Raise
        :class:`EncodeError` naming the message and the field when a field is missing,
        unknown or out of range.
        """
        schema = (
            self.schema.names.get(message)
            if isinstance(message, str)
            else (self.schema.messages.get(message))
        )
        if schema is None:
            known = ", ".join(sorted(self.schema.names))
            raise EncodeError(
                f"no message {message!r} in catalog {self.schema.catalog.name!r} (known: {known})"
            )
        given = dict(fields or {})
        declared = {spec.name for spec in schema.spec.fields}
        missing = sorted(declared - set(given))
        extra = sorted(set(given) - declared)
        if missing or extra:
            raise EncodeError(
                f"message {schema.spec.name!r}: missing fields {missing}, unknown fields {extra}"
            )
        try:
            payload = schema.payload.build(given)
        except (construct.ConstructError, ValueError, TypeError, OverflowError) as exc:
            raise EncodeError(f"message {schema.spec.name!r}: {_describe(exc)}") from exc
        return self.encode_raw(schema.spec.cmd, payload, header=header)

    def encode_raw(
        self, cmd: int, payload: bytes, *, header: Mapping[str, int] | None = None
    ) -> bytes:
        """Return a frame with any ``cmd`` and raw ``payload`` (known to the catalog or not),
        and the header fields of ``header`` as :meth:`encode` takes them."""
        profile = self.schema.profile
        if len(payload) > profile.max_payload:
            raise EncodeError(
                f"payload of {len(payload)} bytes exceeds the maximum of "
                f"{profile.max_payload} in profile {profile.name!r}"
            )
        values: dict[str, Any] = {"cmd": cmd, "payload": payload}
        for key, value in (header or {}).items():
            if key not in self._header_keys:
                raise EncodeError(
                    f"profile {profile.name!r} has no header field {key!r} to set "
                    f"(it has: {', '.join(self._header_keys) or 'none'})"
                )
            values[key] = value
        try:
            frame: bytes = self.schema.frame.build({"body": {"value": values}})
        except (construct.ConstructError, ValueError, TypeError, OverflowError) as exc:
            raise EncodeError(f"cmd {cmd}: {_describe(exc)}") from exc
        return frame


def _describe(exc: Exception) -> str:
    """Say which field failed and why, from construct's "Error in path (building) -> x" form."""
    text = str(exc)
    if text.startswith("Error in path (building) -> "):
        path, _, reason = text.removeprefix("Error in path (building) -> ").partition("\n")
        return f"field {path.replace(' -> ', '.')}: {' '.join(reason.split())}"
    return " ".join(text.split())
