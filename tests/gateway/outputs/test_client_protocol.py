"""The WebSocket client protocol without a socket: text in, requests or errors out; replies.

Also the two pieces it stands on: tokens and roles, and the token bucket.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.outputs.websocket.auth import Role, Tokens
from gateway.outputs.websocket.client_protocol import (
    ClientError,
    ClientProtocol,
    Command,
    ErrorCode,
    RequestId,
    Subscribe,
    Unsubscribe,
    bad_filter,
    command_failed,
    command_sent_reply,
    dropped_notice,
    error_reply,
    hard_size_limit,
    hello_message,
    history_gap,
    subscribed_reply,
    too_slow_reason,
    unsubscribed_reply,
)
from gateway.outputs.websocket.ratelimit import TokenBucket
from gateway.runtime.journal import Gap, Resume

MAX = 256
"""max_message_size of the protocols under test."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def protocol(
    role: Role = Role.COMMAND,
    *,
    burst: int = 10,
    command_tokens_configured: bool = True,
    clock: Clock | None = None,
) -> ClientProtocol:
    return ClientProtocol(
        role=role,
        max_message_size=MAX,
        bucket=TokenBucket(rate=1.0, burst=burst, clock=clock or Clock()),
        command_tokens_configured=command_tokens_configured,
    )


def reply(data: bytes) -> dict[str, Any]:
    record = orjson.loads(data)
    assert isinstance(record, dict)
    return record


# Requests.

REQUESTS: list[tuple[str, Subscribe | Unsubscribe | Command]] = [
    ('{"type": "subscribe", "filters": ["#"]}', Subscribe(("#",))),
    (
        '{"type": "subscribe", "filters": ["node-1/+", "+/power"], "since": 12, "id": "s"}',
        Subscribe(("node-1/+", "+/power"), 12, RequestId("s")),
    ),
    ('{"type": "subscribe", "filters": [], "since": 0}', Subscribe((), 0)),
    ('{"type": "subscribe", "filters": ["#"], "since": null}', Subscribe(("#",))),
    (
        '{"type": "subscribe", "filters": ["#"], "id": null}',
        Subscribe(("#",), None, RequestId(None)),
    ),
    ('{"type": "unsubscribe", "filters": ["a/b"], "id": 3}', Unsubscribe(("a/b",), RequestId(3))),
    (
        '{"type": "command", "device": "node-1", "message": "set_rate", "fields": {"hz": 5}}',
        Command("node-1", "set_rate", {"hz": 5}),
    ),
    (
        '{"type": "command", "device": "n", "message": "ping", "id": [1]}',
        Command("n", "ping", {}, RequestId([1])),
    ),
]


@pytest.mark.parametrize(("data", "expected"), REQUESTS)
def test_requests(data: str, expected: Subscribe | Unsubscribe | Command) -> None:
    assert protocol().receive(data) == expected


# Every error code a client's message alone can cause.

ERRORS: list[tuple[str | bytes, ErrorCode, str]] = [
    ("{nope", ErrorCode.BAD_JSON, "not json"),
    ("", ErrorCode.BAD_JSON, "not json"),
    (b'{"type": "subscribe", "filters": ["#"]}', ErrorCode.BAD_JSON, "binary frame of 39 bytes"),
    ("[1, 2]", ErrorCode.NOT_AN_OBJECT, "got an array"),
    ('"subscribe"', ErrorCode.NOT_AN_OBJECT, "got a string"),
    ('{"type": "dance"}', ErrorCode.UNKNOWN_TYPE, "'dance'"),
    ('{"type": "' + "x" * 100 + '"}', ErrorCode.UNKNOWN_TYPE, "xxx..."),
    ('{"filters": ["#"]}', ErrorCode.BAD_REQUEST, "missing key 'type'"),
    ('{"type": 7}', ErrorCode.BAD_REQUEST, "'type' must be a string, got a number"),
    ('{"type": "subscribe"}', ErrorCode.BAD_REQUEST, "missing key 'filters'"),
    ('{"type": "subscribe", "filters": "#"}', ErrorCode.BAD_REQUEST, "must be an array"),
    ('{"type": "subscribe", "filters": [1]}', ErrorCode.BAD_REQUEST, "item 0 is a number"),
    ('{"type": "subscribe", "filters": ["#"], "since": -1}', ErrorCode.BAD_REQUEST, "got -1"),
    ('{"type": "subscribe", "filters": ["#"], "since": "1"}', ErrorCode.BAD_REQUEST, 'got "1"'),
    ('{"type": "subscribe", "filters": ["#"], "since": true}', ErrorCode.BAD_REQUEST, "got true"),
    ('{"type": "subscribe", "filters": ["#"], "since": 1.5}', ErrorCode.BAD_REQUEST, "got 1.5"),
    ('{"type": "unsubscribe"}', ErrorCode.BAD_REQUEST, "missing key 'filters'"),
    ('{"type": "command", "message": "ping"}', ErrorCode.BAD_REQUEST, "missing key 'device'"),
    ('{"type": "command", "device": "", "message": "p"}', ErrorCode.BAD_REQUEST, "empty string"),
    ('{"type": "command", "device": "n"}', ErrorCode.BAD_REQUEST, "missing key 'message'"),
    (
        '{"type": "command", "device": "n", "message": "p", "fields": [1]}',
        ErrorCode.BAD_REQUEST,
        "'fields' must be an object, got an array",
    ),
    ('{"type": "subscribe", "filters": ["a/#/b"]}', ErrorCode.BAD_FILTER, "'#'"),
    ('{"type": "subscribe", "filters": ["a+"]}', ErrorCode.BAD_FILTER, "'+'"),
    ('{"type": "subscribe", "filters": [""]}', ErrorCode.BAD_FILTER, "empty filter"),
    (
        '{"type": "subscribe", "filters": ["' + "a" * MAX + '"]}',
        ErrorCode.TOO_LARGE,
        f"message of {MAX + 38} bytes, at most {MAX} allowed",
    ),
    ("é" * (MAX // 2 + 1), ErrorCode.TOO_LARGE, f"message of {MAX + 2} bytes"),
    (b"\x00" * (MAX + 1), ErrorCode.TOO_LARGE, f"message of {MAX + 1} bytes"),
]


@pytest.mark.parametrize(("data", "code", "says"), ERRORS)
def test_errors(data: str | bytes, code: ErrorCode, says: str) -> None:
    error = protocol().receive(data)
    assert isinstance(error, ClientError)
    assert error.code is code
    assert says in error.message
    assert error.message == error.message.lower() or code is ErrorCode.UNKNOWN_TYPE


def test_an_error_carries_the_request_id_once_the_message_is_an_object() -> None:
    error = protocol().receive('{"type": "dance", "id": {"n": 1}}')
    assert isinstance(error, ClientError)
    assert (error.code, error.id) == (ErrorCode.UNKNOWN_TYPE, RequestId({"n": 1}))
    assert reply(error_reply(error)) == {
        "type": "error",
        "code": "unknown_type",
        "message": error.message,
        "id": {"n": 1},
    }
    assert "'dance'" in error.message
    error = protocol().receive("[1]")
    assert isinstance(error, ClientError)
    assert error.id is None
    assert set(reply(error_reply(error))) == {"type", "code", "message"}


COMMAND = '{"type": "command", "device": "node-1", "message": "ping"}'


def test_a_read_role_may_not_send_commands() -> None:
    error = protocol(Role.READ).receive(COMMAND)
    assert isinstance(error, ClientError)
    assert error.code is ErrorCode.FORBIDDEN
    assert "use a command token" in error.message
    error = protocol(Role.READ, command_tokens_configured=False).receive(COMMAND)
    assert isinstance(error, ClientError)
    assert error.code is ErrorCode.FORBIDDEN
    assert "no command tokens are configured" in error.message
    # Checked before the keys: a read-only client learns nothing more.
    error = protocol(Role.READ).receive('{"type": "command"}')
    assert isinstance(error, ClientError)
    assert error.code is ErrorCode.FORBIDDEN


def test_commands_are_rate_limited_by_the_connections_bucket() -> None:
    clock = Clock()
    client = protocol(burst=2, clock=clock)
    assert isinstance(client.receive(COMMAND), Command)
    assert isinstance(client.receive('{"type": "command"}'), ClientError)  # takes a token too
    error = client.receive(COMMAND)
    assert isinstance(error, ClientError)
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.message == "more than 1 commands per second (bursts of 2): try again later"
    assert isinstance(client.receive('{"type": "subscribe", "filters": ["#"]}'), Subscribe)
    clock.now = 1.0
    assert isinstance(client.receive(COMMAND), Command)


# Errors the server finds out, and replies.


def test_errors_the_server_finds_out() -> None:
    subscribe = Subscribe(("#",), 2, RequestId(9))
    entries = [(seq, "node-1/environment", b"{}") for seq in range(6, 11)]
    gap = history_gap(subscribe, Resume(2, 10, 6, entries, (Gap(3, 5, uncertain=False),)))
    assert reply(error_reply(gap)) == {
        "type": "error",
        "code": "history_gap",
        "message": "messages 3 to 5 are no longer in the history, replaying from seq 6",
        "oldest": 6,
        "id": 9,
    }
    ahead = history_gap(Subscribe(("#",), 50), Resume(50, 10, 1, entries, ()))
    assert ahead.code is ErrorCode.HISTORY_GAP
    assert "seq 50 is ahead of the gateway's last seq 10" in ahead.message
    assert ahead.oldest == 1
    # After an unclean stop: numbers skipped, some perhaps given, none kept.
    skipped = (Gap(3, 5, uncertain=False), Gap(11, 1000010, uncertain=True))
    after_crash = history_gap(subscribe, Resume(2, 1000010, 6, entries, skipped))
    assert after_crash.message == (
        "messages 3 to 5 are no longer in the history; messages 11 to 1000010 may have been "
        "numbered before the gateway stopped uncleanly and are not in the history, "
        "replaying from seq 6"
    )
    assert after_crash.oldest == 6
    too_many = bad_filter(subscribe, "101 filters, expected at most 100")
    assert (too_many.code, too_many.id) == (ErrorCode.BAD_FILTER, RequestId(9))
    failed = command_failed(Command("node-9", "ping", {}, RequestId("c")), "no device 'node-9'")
    assert reply(error_reply(failed)) == {
        "type": "error",
        "code": "command_failed",
        "message": "no device 'node-9'",
        "id": "c",
    }


def test_every_error_code_is_reachable() -> None:
    reached = {code for _, code, _ in ERRORS} | {
        ErrorCode.FORBIDDEN,
        ErrorCode.RATE_LIMITED,
        ErrorCode.HISTORY_GAP,
        ErrorCode.COMMAND_FAILED,
    }
    assert reached == set(ErrorCode)


def test_replies() -> None:
    subscribe = Subscribe(("#",), id=RequestId("s1"))
    assert reply(subscribed_reply(subscribe, ["node-1/+", "#"])) == {
        "type": "subscribed",
        "filters": ["node-1/+", "#"],
        "id": "s1",
    }
    assert reply(unsubscribed_reply(Unsubscribe(("#",)), [])) == {
        "type": "unsubscribed",
        "filters": [],
    }
    assert reply(command_sent_reply(Command("node-1", "ping", {}, RequestId(None)))) == {
        "type": "command_sent",
        "device": "node-1",
        "message": "ping",
        "id": None,
    }
    assert reply(hello_message({"type": "hello", "version": "1"}, 41)) == {
        "type": "hello",
        "version": "1",
        "seq": 41,
    }
    assert dropped_notice(5) == b'{"type":"dropped","count":5}'
    assert too_slow_reason(12) == "too slow: 12 messages behind"
    assert hard_size_limit(64) == 2**20
    assert hard_size_limit(2**20) == 2**22


# Tokens and roles.


@pytest.mark.parametrize(
    ("authorization", "target", "role"),
    [
        (None, "/", None),
        ("Bearer read-token", "/", Role.READ),
        ("bearer command-token", "/", Role.COMMAND),
        ("Bearer  command-token ", "/", Role.COMMAND),
        ("Bearer nope", "/", None),
        ("Basic read-token", "/", None),
        ("Bearer ", "/?token=read-token", Role.READ),
        (None, "/?token=command-token", Role.COMMAND),
        (None, "/?token=wrong", None),
        (None, "/?other=read-token", None),
    ],
)
def test_tokens_give_roles(authorization: str | None, target: str, role: Role | None) -> None:
    tokens = Tokens(read=("read-token",), command=("command-token",))
    assert tokens.required
    assert tokens.role(authorization, target) is role


def test_without_tokens_anyone_may_read_and_nobody_may_command() -> None:
    tokens = Tokens()
    assert not tokens.required
    assert tokens.role(None, "/") is Role.READ
    assert tokens.role("Bearer command-token", "/?token=x") is Role.READ


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 0.5
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now = 100.0
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
