"""Topic filters: a table of filters against ``device/message`` topics, and invalid filters."""

from __future__ import annotations

import pytest

from gateway.runtime.topics import (
    MAX_FILTER_LENGTH,
    TopicFilter,
    matches,
    split_topic,
    validate_filter,
)

MATCHES = [
    # filter, topic, expected
    ("#", "node-1/environment", True),
    ("#", "node-1/unknown", True),
    ("+/+", "node-1/environment", True),
    ("+", "node-1/environment", False),
    ("+/#", "node-1/environment", True),
    ("+/environment", "node-1/environment", True),
    ("+/environment", "node-1/motion", False),
    ("+/x", "node-1/x", True),
    ("+/x", "node-1/y", False),
    ("node-1/+", "node-1/environment", True),
    ("node-1/+", "node-2/environment", False),
    ("node-1/#", "node-1/environment", True),
    ("node-1/#", "node-2/environment", False),
    ("node-1/environment", "node-1/environment", True),
    ("node-1/environment", "node-1/environmen", False),
    ("node-1/environment", "node-1/environment/x", False),
    ("node-1", "node-1/environment", False),
    ("node-1/environment/#", "node-1/environment", True),
    ("node-1/environment/+", "node-1/environment", False),
    ("a/b/c", "a/b", False),
    ("a/#", "a", True),
    ("a/#", "ab", False),
    ("a/+", "a", False),
    ("NODE-1/+", "node-1/status", False),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCHES)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected
    topic_filter = TopicFilter(pattern)
    assert topic_filter.matches(topic) is expected
    assert topic_filter.matches_levels(split_topic(topic)) is expected


INVALID = [
    # filter, a word the message must hold
    ("", "empty filter"),
    ("#/a", "'#' must be the last level"),
    ("a/#/b", "'#' must be the last level"),
    ("a/b#", "mixes a wildcard with text"),
    ("a+/b", "mixes a wildcard with text"),
    ("+a", "mixes a wildcard with text"),
    ("##", "mixes a wildcard with text"),
    ("a//b", "empty level 2"),
    ("a/", "empty level 2"),
    ("/a", "empty level 1"),
    ("x" * (MAX_FILTER_LENGTH + 1), f"at most {MAX_FILTER_LENGTH}"),
]


@pytest.mark.parametrize(("pattern", "reason"), INVALID)
def test_invalid_filters(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        validate_filter(pattern)
    message = str(caught.value)
    assert message == message.lower() or pattern in message
    with pytest.raises(ValueError, match=reason):
        TopicFilter(pattern)
    with pytest.raises(ValueError, match=reason):
        matches(pattern, "a/b")


@pytest.mark.parametrize("pattern", ["#", "+", "a", "a/b", "a/+/c/#", "+/+/+/+", "x" * 256])
def test_valid_filters(pattern: str) -> None:
    validate_filter(pattern)


def test_filters_compare_by_pattern() -> None:
    assert TopicFilter("a/+") == TopicFilter("a/+")
    assert len({TopicFilter("a/+"), TopicFilter("a/+"), TopicFilter("#")}) == 2
    assert repr(TopicFilter("a/#")) == "TopicFilter('a/#')"
