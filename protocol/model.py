"""The base of the configuration models: strict, frozen, and aware of their source file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PrivateAttr

__all__ = ["ConfigDocument", "InvalidKeyError", "StrictModel", "first_duplicate"]


class StrictModel(BaseModel):
    """A frozen model that rejects keys it does not know (so typos are errors, not defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigDocument(StrictModel):
    """A whole configuration file: remembers where it came from, for error messages."""

    _source: str = PrivateAttr(default="<memory>")

    @property
    def source(self) -> str:
        """The file this document was loaded from, or ``"<memory>"``."""
        return self._source

    def with_source(self, source: str) -> ConfigDocument:
        """Record ``source`` as this document's file and return the document."""
        self._source = source
        return self


class InvalidKeyError(ValueError):
    """Raised by a validator that checks several keys: says which key, relative to the model.

    ``protocol.config.validate`` appends ``key`` to the location pydantic reports, so
    the operator reads ``messages[0].fields[1].length: required for type 'bytes'``.
    """

    def __init__(self, key: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.key = key


def first_duplicate(values: list[object]) -> int | None:
    """Return the index of the first value that appeared before, or None."""
    seen: set[object] = set()
    for index, value in enumerate(values):
        if value in seen:
            return index
        seen.add(value)
    return None
