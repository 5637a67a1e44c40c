"""The base of the configuration models: strict, frozen, and aware of their source file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PrivateAttr

__all__ = ["ConfigDocument", "StrictModel"]


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
