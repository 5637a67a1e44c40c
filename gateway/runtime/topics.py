"""Topic filters: which ``device/message`` topics a subscriber wants, MQTT style.

A topic has exactly two levels, the device and the message (``node-1/environment``,
``node-1/unknown``); see :attr:`gateway.runtime.envelope.Envelope.topic`. A filter has any
number of levels separated by ``/``:

* a level of text matches the same text;
* ``+`` matches exactly one level, whatever it holds;
* ``#``, only as the last level, matches any number of remaining levels, none
  included (as in MQTT, ``node-1/#`` matches ``node-1`` as well as ``node-1/status``).

``+`` and ``#`` must be whole levels: ``node+`` or ``a/b#`` are invalid. A filter with
more levels than a topic is valid but matches nothing.

Validate a filter once with :func:`validate_filter` or by building a
:class:`TopicFilter`; then match many topics against it. Split each topic once with
:func:`split_topic` and call :meth:`TopicFilter.matches_levels` when matching one topic
against many filters.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_FILTER_LENGTH", "TopicFilter", "matches", "split_topic", "validate_filter"]

MAX_FILTER_LENGTH = 256
"""Longest filter accepted, in characters."""

SEPARATOR = "/"
SINGLE = "+"
MULTI = "#"


def validate_filter(pattern: str) -> None:
    """Raise :class:`ValueError` with a lower-case reason if ``pattern`` is not a valid filter."""
    if not pattern:
        raise ValueError("empty filter")
    if len(pattern) > MAX_FILTER_LENGTH:
        raise ValueError(
            f"filter of {len(pattern)} characters, expected at most {MAX_FILTER_LENGTH}"
        )
    levels = pattern.split(SEPARATOR)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if not level:
            raise ValueError(f"empty level {index + 1} in filter {pattern!r}")
        if level == MULTI:
            if index != last:
                raise ValueError(
                    f"'#' must be the last level, found at level {index + 1} "
                    f"of {len(levels)} in filter {pattern!r}"
                )
        elif level != SINGLE and (SINGLE in level or MULTI in level):
            raise ValueError(
                f"level {index + 1} of filter {pattern!r} mixes a wildcard with text: "
                f"'+' and '#' must be a whole level"
            )


def split_topic(topic: str) -> list[str]:
    """Split a topic into its levels, for :meth:`TopicFilter.matches_levels`."""
    return topic.split(SEPARATOR)


class TopicFilter:
    """A validated filter, split once; raise :class:`ValueError` if ``pattern`` is invalid."""

    __slots__ = ("_levels", "_multi", "pattern")

    def __init__(self, pattern: str) -> None:
        validate_filter(pattern)
        self.pattern = pattern
        levels = pattern.split(SEPARATOR)
        self._multi = levels[-1] == MULTI
        self._levels: tuple[str, ...] = tuple(levels[:-1] if self._multi else levels)

    def matches(self, topic: str) -> bool:
        """True if ``topic`` (``device/message``) matches this filter."""
        return self.matches_levels(topic.split(SEPARATOR))

    def matches_levels(self, levels: Sequence[str]) -> bool:
        """True if the topic split into ``levels`` (see :func:`split_topic`) matches."""
        mine = self._levels
        if len(levels) != len(mine) and not (self._multi and len(levels) > len(mine)):
            return False
        return all(want in (got, SINGLE) for want, got in zip(mine, levels, strict=False))

    def __repr__(self) -> str:
        return f"TopicFilter({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicFilter) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


def matches(pattern: str, topic: str) -> bool:
    """True if ``topic`` matches the filter ``pattern``; raise ValueError if it is invalid."""
    return TopicFilter(pattern).matches(topic)
