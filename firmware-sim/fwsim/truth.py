"""Ground truth: one JSON line per thing sent, so tests can check a decoder exactly.

Records (``type``):

- ``frame``: a frame built by the simulator. ``offset`` and ``size`` say where its
  bytes landed in the link's byte stream (counted over the whole run); ``message``,
  ``cmd``, ``fields``, ``sequence``, ``address`` what it carried; ``raw`` the frame as
  built (hex). ``fault`` is null for a frame sent as built, ``duplicate`` for the
  second copy of one, or the corruption it suffered, with ``sent`` the bytes that
  went out instead. ``reply_to`` is the request id a response answers.
- ``fault``: junk on the line (``noise``, ``garbage_burst``: ``offset``, ``size``), or
  a window of silence (``stall``, ``disconnect``: ``time``, ``duration`` and
  ``skipped``, the messages that fell due meanwhile and were never sent).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from protocol.records import dumps

__all__ = ["TruthWriter"]


class TruthWriter:
    """Append ground-truth records to a JSON-lines file (or nowhere, when path is None)."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[bytes] | None = path.open("wb") if path is not None else None

    def write(self, record: dict[str, Any]) -> None:
        """Write one record (bytes values become hex)."""
        if self._file is not None:
            self._file.write(dumps(record))
            self._file.flush()

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
