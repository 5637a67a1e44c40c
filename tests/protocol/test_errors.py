"""The one wording of an I/O failure: what operators read in logs and errors."""

from __future__ import annotations

import errno
import socket

import pytest
import serial

from protocol.errors import os_error_reason


def chained(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


NO_DATA = "device reports readiness to read but returned no data (device disconnected?)"

CASES = {
    "errno": (
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        "no such file or directory",
    ),
    "errno, address in strerror": (
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 1)"),
        "connection refused",
    ),
    "pyserial, errno in the message": (
        serial.SerialException(
            errno.EIO, "could not open port /dev/x: [Errno 5] Input/output error"
        ),
        "input/output error",
    ),
    "pyserial, port hung up": (serial.SerialException(NO_DATA), "hung up"),
    "wrapping an OSError": (
        chained(serial.SerialException("read failed"), OSError(errno.EIO, "Input/output error")),
        "input/output error",
    ),
    "timeout without words": (TimeoutError(), "timed out"),
    "negative errno (getaddrinfo)": (
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        "name or service not known",
    ),
    "not an OSError": (ValueError("Invalid baud rate: -1"), "invalid baud rate: -1"),
    "bytes that are not text": (
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
    ),
    "nothing to say": (OSError(), "oserror"),
}


@pytest.mark.parametrize(("exc", "reason"), CASES.values(), ids=CASES.keys())
def test_os_error_reason(exc: BaseException, reason: str) -> None:
    assert os_error_reason(exc) == reason
