"""JUnit XML reports: valid against the JUnit schema in ``data/junit.xsd``, counts right,
text that needs escaping read back as written, files replaced atomically."""

from __future__ import annotations

import functools
import os
import stat
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import xmlschema

from gateway.ci.junit import FAILURE_TYPE, CaseResult, junit_text, write_junit

SCHEMA_PATH = Path(__file__).parent / "junit.xsd"
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

DIFF = (
    "frame 12 (environment, cmd 16) at offset 345: fields.temperature: expected 21.5, got 22.0\n"
    "error 3 (bad_checksum, 9 bytes) at offset 77: detail: expected \"<a & b>\", got 'c'\n"
    "missing: frame 13 (power, cmd 18) expected at offset 356\n"
    '  fields.unit: expected "°C", got "µA ✓"\n'
    "]]> <![CDATA[ &amp; </failure>"
)


@functools.cache
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(SCHEMA_PATH)


@pytest.fixture
def schema() -> xmlschema.XMLSchema:
    return junit_schema()


def write(tmp_path: Path, cases: list[CaseResult], suite: str = "tgw check") -> ET.Element:
    """Write the report, validate it against the schema, return its ``<testsuite>``."""
    path = tmp_path / "report.xml"
    write_junit(path, suite, cases, timestamp=WHEN, hostname="ci-runner")
    junit_schema().validate(str(path))
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (testsuite,) = root
    assert testsuite.tag == "testsuite"
    return testsuite


def counts(testsuite: ET.Element) -> dict[str, str]:
    return {
        key: testsuite.attrib[key] for key in ("name", "tests", "failures", "errors", "skipped")
    }


def test_schema_is_a_valid_schema(schema: xmlschema.XMLSchema) -> None:
    assert schema.elements.keys() == {"testsuites"}


def test_schema_rejects_what_it_should(schema: xmlschema.XMLSchema) -> None:
    valid = junit_text("suite", [CaseResult("a", 0.5)], timestamp=WHEN, hostname="host")
    schema.validate(valid.decode())
    without_tests = valid.replace(b' tests="1"', b"")
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(without_tests.decode())
    two_outcomes = valid.replace(
        b'time="0.500" />',
        b'time="0.500"><failure type="x"/><error type="y"/></testcase>',
    )
    assert two_outcomes != valid
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        schema.validate(two_outcomes.decode())


def test_all_passing(tmp_path: Path) -> None:
    cases = [CaseResult("dumps/boot.bin", 0.25), CaseResult("dumps/run.bin", 1.5)]
    testsuite = write(tmp_path, cases)
    assert counts(testsuite) == {
        "name": "tgw check",
        "tests": "2",
        "failures": "0",
        "errors": "0",
        "skipped": "0",
    }
    assert testsuite.attrib["time"] == "1.750"
    assert testsuite.attrib["timestamp"] == "2024-05-06T07:08:09"
    assert testsuite.attrib["hostname"] == "ci-runner"
    testcases = testsuite.findall("testcase")
    assert [case.attrib for case in testcases] == [
        {"classname": "tgw check", "name": "dumps/boot.bin", "time": "0.250"},
        {"classname": "tgw check", "name": "dumps/run.bin", "time": "1.500"},
    ]
    assert all(len(case) == 0 for case in testcases)


def test_one_failing_with_text_that_needs_escaping(tmp_path: Path) -> None:
    cases = [
        CaseResult("dumps/boot.bin", 0.1),
        CaseResult('dumps/"odd" & <name>.bin', 0.2, failure='3 differences <&">', details=DIFF),
    ]
    testsuite = write(tmp_path, cases)
    assert counts(testsuite)["tests"] == "2"
    assert counts(testsuite)["failures"] == "1"
    assert counts(testsuite)["errors"] == "0"
    failing = testsuite.findall("testcase")[1]
    assert failing.attrib["name"] == 'dumps/"odd" & <name>.bin'
    (failure,) = failing
    assert failure.tag == "failure"
    assert failure.attrib == {"message": '3 differences <&">', "type": FAILURE_TYPE}
    assert failure.text == DIFF


def test_one_error(tmp_path: Path) -> None:
    cases = [
        CaseResult("dumps/boot.bin", 0.1, failure="1 difference", details="missing: ..."),
        CaseResult(
            "dumps/gone.bin",
            0.0,
            error="dumps/gone.bin: cannot open: No such file or directory",
            error_type="InputError",
        ),
        CaseResult("dumps/run.bin", 0.3),
    ]
    testsuite = write(tmp_path, cases)
    assert counts(testsuite) == {
        "name": "tgw check",
        "tests": "3",
        "failures": "1",
        "errors": "1",
        "skipped": "0",
    }
    (error,) = testsuite.findall("testcase")[1]
    assert error.tag == "error"
    assert error.attrib == {
        "message": "dumps/gone.bin: cannot open: No such file or directory",
        "type": "InputError",
    }
    assert error.text is None


def test_failure_type_can_be_given(tmp_path: Path) -> None:
    cases = [CaseResult("a", 0.1, failure="12 errors", failure_type="threshold exceeded")]
    (failure,) = write(tmp_path, cases).findall("testcase")[0]
    assert failure.attrib == {"message": "12 errors", "type": "threshold exceeded"}


def test_an_error_wins_over_a_failure(tmp_path: Path) -> None:
    cases = [CaseResult("a", 0.1, failure="differs", error="cannot read", details="why")]
    testsuite = write(tmp_path, cases)
    assert (counts(testsuite)["failures"], counts(testsuite)["errors"]) == ("0", "1")
    (error,) = testsuite.findall("testcase")[0]
    assert (error.tag, error.text) == ("error", "why")


def test_no_cases(tmp_path: Path) -> None:
    testsuite = write(tmp_path, [])
    assert counts(testsuite)["tests"] == "0"
    assert testsuite.attrib["time"] == "0.000"


def test_characters_xml_cannot_hold_are_written_escaped(tmp_path: Path) -> None:
    details = "bell \x07, nul \x00, lone surrogate \udc80, fine: tab\t newline\n"
    testsuite = write(tmp_path, [CaseResult("a\x1b", 0.1, failure="x\x00", details=details)])
    testcase = testsuite.findall("testcase")[0]
    assert testcase.attrib["name"] == "a\\x1b"
    (failure,) = testcase
    assert failure.attrib["message"] == "x\\x00"
    assert failure.text == "bell \\x07, nul \\x00, lone surrogate \\udc80, fine: tab\t newline\n"


def test_odd_times_and_a_zoned_timestamp(tmp_path: Path) -> None:
    cases = [CaseResult("a", -1.0), CaseResult("b", float("nan")), CaseResult("c", 1234.56789)]
    path = tmp_path / "report.xml"
    east = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    write_junit(path, "suite", cases, timestamp=east, hostname="h")
    junit_schema().validate(str(path))
    testsuite = ET.parse(path).getroot()[0]
    assert [case.attrib["time"] for case in testsuite.findall("testcase")] == [
        "0.000",
        "0.000",
        "1234.568",
    ]
    assert testsuite.attrib["time"] == "1234.568"
    assert testsuite.attrib["timestamp"] == "2024-05-06T07:08:09"


def test_defaults_are_now_and_this_host(schema: xmlschema.XMLSchema) -> None:
    text = junit_text("suite", [CaseResult("a", 0.1)])
    schema.validate(text.decode())
    testsuite = ET.fromstring(text)[0]
    written = datetime.fromisoformat(testsuite.attrib["timestamp"]).replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - written) < timedelta(minutes=1)
    assert testsuite.attrib["hostname"]


def test_text_is_utf8_with_a_declaration() -> None:
    text = junit_text("suite", [CaseResult("ü", 0.1)], timestamp=WHEN, hostname="h")
    assert text.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<testsuites>")
    assert "ü".encode() in text


def test_an_empty_suite_name_is_refused() -> None:
    with pytest.raises(ValueError, match="suite name"):
        junit_text(" ", [])


def test_write_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    path.write_text("old")
    write_junit(str(path), "suite", [CaseResult("a", 0.1)], timestamp=WHEN, hostname="h")
    assert path.read_bytes() == junit_text(
        "suite", [CaseResult("a", 0.1)], timestamp=WHEN, hostname="h"
    )
    assert os.listdir(tmp_path) == ["report.xml"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_write_failure_raises_and_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    path.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(OSError, match="directory"):
        write_junit(path, "suite", [CaseResult("a", 0.1)])
    assert path.is_dir()
    assert os.listdir(tmp_path) == ["report.xml"]
    with pytest.raises(OSError, match="No such file"):
        write_junit(tmp_path / "missing" / "report.xml", "suite", [])
