"""The error hex text raises: a line that cannot be read, named."""

from __future__ import annotations

from protocol.errors import ProtocolError

__all__ = ["DumpLayoutError", "HexTextError"]


class HexTextError(ProtocolError):
    """Text that looks like a hex dump but cannot be read as one.

    ``str(error)`` is one line, ``"line N: <what is wrong>"``, quoting the offending token,
    ready to print to an operator as it is. ``line`` is 1-based.
    """

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


class DumpLayoutError(HexTextError):
    """A problem that only a hex dump can have: the text is one, even if its first line fails."""
