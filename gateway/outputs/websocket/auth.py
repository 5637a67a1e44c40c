"""Tokens and roles: what a WebSocket client may do, decided from its handshake.

A client gives its token in the ``Authorization: Bearer <token>`` header or, because
browsers cannot set headers, in the ``token`` query parameter of the URL.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

__all__ = ["Role", "Tokens"]


class Role(enum.StrEnum):
    """What a connection's token allows."""

    READ = "read"
    """Subscribe."""
    COMMAND = "command"
    """Subscribe and send commands."""


@dataclass(frozen=True, slots=True)
class Tokens:
    """The configured tokens. With none at all, anyone may subscribe and nobody may
    send commands."""

    read: tuple[str, ...] = ()
    command: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        """Whether a handshake without a valid token is refused."""
        return bool(self.read or self.command)

    def role(self, authorization: str | None, target: str) -> Role | None:
        """The role of a handshake with header ``authorization`` (None: absent) for the
        request target ``target`` (path and query); None if it must be refused (401)."""
        if not self.required:
            return Role.READ
        token = _token(authorization, target)
        if token is None:
            return None
        if _known(token, self.command):
            return Role.COMMAND
        if _known(token, self.read):
            return Role.READ
        return None


def _token(authorization: str | None, target: str) -> str | None:
    """The bearer token of the Authorization header, else the ``token`` query parameter."""
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    tokens = parse_qs(urlsplit(target).query).get("token")
    return tokens[0] if tokens else None


def _known(token: str, tokens: tuple[str, ...]) -> bool:
    """True if ``token`` is one of ``tokens``, compared in constant time."""
    given = token.encode()
    found = False
    for candidate in tokens:
        found |= hmac.compare_digest(given, candidate.encode())
    return found
