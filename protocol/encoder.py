"""Building frames from messages, with the same construct schemas the decoder trusts.

The simulator, the tests and commands sent down to devices all build frames here::

    encoder = FrameEncoder(load_schema())
    frame = encoder.encode("environment", {"temperature": 21.5, "humidity": 40.0,
                                           "pressure": 1013.2})
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
        self._roles = set(schema.header_roles)

    def encode(
        self,
        message: str | int,
        fields: Mapping[str, Any] | None = None,
        *,
        sequence: int | None = None,
        address: int | None = None,
    ) -> bytes:
        """Return the frame carrying ``message`` (a name or a cmd value) with ``fields``.

        Values are engineering values (scaled, enum names, bit-field dicts), as the
        decoder returns them. Raise :class:`EncodeError` naming the message and the
        field when a field is missing, unknown or out of range.
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
        return self.encode_raw(schema.spec.cmd, payload, sequence=sequence, address=address)

    def encode_raw(
        self, cmd: int, payload: bytes, *, sequence: int | None = None, address: int | None = None
    ) -> bytes:
        """Return a frame with any ``cmd`` and raw ``payload`` (known to the catalog or not)."""
        profile = self.schema.profile
        if len(payload) > profile.max_payload:
            raise EncodeError(
                f"payload of {len(payload)} bytes exceeds the maximum of "
                f"{profile.max_payload} in profile {profile.name!r}"
            )
        header: dict[str, Any] = {"cmd": cmd, "payload": payload}
        for role, value in ((HeaderRole.SEQUENCE, sequence), (HeaderRole.ADDRESS, address)):
            if value is not None:
                if role not in self._roles:
                    raise EncodeError(f"profile {profile.name!r} has no {role.value} field")
                header[role.value] = value
        try:
            frame: bytes = self.schema.frame.build({"body": {"value": header}})
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
