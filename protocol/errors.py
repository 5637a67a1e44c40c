"""The project's exceptions: one root, protocol errors apart from configuration errors.

Bad bytes on the wire are *not* exceptions: the stream decoder reports them as
:class:`protocol.events.StreamError` events. Exceptions are for mistakes the caller
can fix: an invalid profile or catalog, or a message that cannot be encoded.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ConfigError", "EncodeError", "GatewayError", "ProtocolError", "os_error_reason"]


class GatewayError(Exception):
    """Root of every exception this project raises on purpose."""


class ProtocolError(GatewayError):
    """A frame or message cannot be built or understood as asked."""


class EncodeError(ProtocolError):
    """A message cannot be encoded: unknown name, missing field, value out of range."""


class ConfigError(GatewayError):
    """A configuration file is missing, unreadable or invalid.

    ``str(error)`` is one line naming the file, the key path and what was expected,
    ready to print to an operator as it is.
    """

    def __init__(self, source: str | Path, key_path: str, problem: str) -> None:
        self.source = str(source)
        self.key_path = key_path
        self.problem = problem
        where = f"{self.source}: {key_path}" if key_path else self.source
        super().__init__(f"{where}: {problem}")


def os_error_reason(exc: BaseException) -> str:
    """Why an I/O operation failed, in lower case: "no such file or directory", "timed out".

    The errno says it best when there is one (asyncio's connect errors carry the address
    in ``strerror``); else the OSError it wraps (pyserial puts the errno in its message);
    pyserial's "returned no data" is a port that hung up. Anything else: its message.
    """
    if isinstance(exc, OSError):
        if isinstance(exc.errno, int) and exc.errno > 0:
            return os.strerror(exc.errno).lower()
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            return os_error_reason(cause)
        if "returned no data" in str(exc):
            return "hung up"
        if isinstance(exc, TimeoutError) and not str(exc):
            return "timed out"
        if exc.strerror:
            return exc.strerror.lower()
    return (str(exc) or type(exc).__name__).lower()
