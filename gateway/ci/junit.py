"""JUnit XML reports, for CI systems that show test results (``tgw check --junit FILE``).

One ``<testsuite>`` in a ``<testsuites>`` root, one ``<testcase>`` per checked dump, in the
shape of Apache Ant's JUnit report that Jenkins, GitLab and GitHub annotations read: besides
the usual attributes, the suite carries ``id``, ``package`` and empty ``<properties>``,
``<system-out>`` and ``<system-err>`` elements, which the strictest published schema of that
format requires.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

__all__ = ["FAILURE_TYPE", "CaseResult", "junit_text", "write_junit"]

FAILURE_TYPE: Final = "failure"
"""The ``type`` of a ``<failure>`` whose :attr:`CaseResult.failure_type` is not given; a
caller that knows what failed says so instead (``threshold exceeded``, ...)."""

ERROR_TYPE: Final = "error"
"""The ``type`` of an ``<error>`` whose :attr:`CaseResult.error_type` is not given."""

# Characters XML 1.0 cannot hold at all, not even escaped (controls, lone surrogates, U+FFFE/F).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class CaseResult:
    """How one test case (one dump checked) went.

    Passed if neither ``failure`` nor ``error`` is set; ``error`` wins over ``failure``.
    """

    name: str
    seconds: float
    failure: str | None = None
    """Short message of a failed check, e.g. ``3 differences``."""
    details: str = ""
    """The text of the failure or error: the differences, one per line."""
    error: str | None = None
    """Why the case could not run, e.g. an unreadable file."""
    error_type: str = ERROR_TYPE
    """The ``type`` of the ``<error>``, e.g. the name of the exception class."""
    failure_type: str = FAILURE_TYPE
    """The ``type`` of the ``<failure>``: what failed, e.g. ``threshold exceeded``."""


def junit_text(
    suite: str,
    cases: Sequence[CaseResult],
    *,
    timestamp: datetime | None = None,
    hostname: str | None = None,
) -> bytes:
    """Return the JUnit XML report (UTF-8, with an XML declaration) for ``cases``.

    ``timestamp`` (default: now; a naive one is local time) is written in UTC without a zone,
    as the format wants; ``hostname`` defaults to this machine's name.
    """
    if not suite.strip():
        raise ValueError("the suite name must not be empty")
    moment = (timestamp or datetime.now(UTC)).astimezone(UTC)
    host = hostname or socket.gethostname() or "localhost"
    root = ET.Element("testsuites")
    testsuite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _text(suite),
            "tests": str(len(cases)),
            "failures": str(sum(case.error is None and case.failure is not None for case in cases)),
            "errors": str(sum(case.error is not None for case in cases)),
            "skipped": "0",
            "time": _seconds(sum(_finite(case.seconds) for case in cases)),
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S"),
            "hostname": _text(host),
            "id": "0",
            "package": _text(suite),
        },
    )
    ET.SubElement(testsuite, "properties")
    for case in cases:
        testcase = ET.SubElement(
            testsuite,
            "testcase",
            {"classname": _text(suite), "name": _text(case.name), "time": _seconds(case.seconds)},
        )
        if case.error is not None:
            element = ET.SubElement(
                testcase, "error", {"message": _text(case.error), "type": _text(case.error_type)}
            )
            element.text = _text(case.details) or None
        elif case.failure is not None:
            element = ET.SubElement(
                testcase,
                "failure",
                {"message": _text(case.failure), "type": _text(case.failure_type)},
            )
            element.text = _text(case.details) or None
    ET.SubElement(testsuite, "system-out")
    ET.SubElement(testsuite, "system-err")
    ET.indent(root)
    output = io.BytesIO()
    ET.ElementTree(root).write(output, encoding="utf-8", xml_declaration=True)
    output.write(b"\n")
    return output.getvalue()


def write_junit(
    path: str | Path,
    suite: str,
    cases: Sequence[CaseResult],
    *,
    timestamp: datetime | None = None,
    hostname: str | None = None,
) -> None:
    """Write :func:`junit_text` to ``path`` atomically: readers see the old file or the whole
    new one, never a part. Raises :class:`OSError` if it cannot be written (the caller reports
    it; nothing is left behind)."""
    data = junit_text(suite, cases, timestamp=timestamp, hostname=hostname)
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp made it private: as open() would
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _text(text: str) -> str:
    """``text`` with what XML 1.0 cannot hold written as ``\\xNN`` / ``\\uNNNN``."""
    return _NOT_XML.sub(_escape_character, text)


def _escape_character(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _finite(seconds: float) -> float:
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _seconds(seconds: float) -> str:
    return f"{_finite(seconds):.3f}"
