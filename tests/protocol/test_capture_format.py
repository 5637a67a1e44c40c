"""The capture file format: a literal fixture, round trips in any chunking, damage reported."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.capture import (
    CaptureFormatError,
    CaptureHeader,
    CaptureParser,
    CaptureRecord,
    RecordKind,
    Truncation,
    file_header,
    record,
)

HEADER = CaptureHeader(
    source="node-1", profile="default", catalog="default", where="/dev/ttyUSB0", created=1.5
)


def parse(data: bytes, chunk: int | None = None) -> tuple[list[CaptureRecord], Truncation | None]:
    parser = CaptureParser()
    records: list[CaptureRecord] = []
    step = chunk or max(1, len(data))
    for start in range(0, len(data), step):
        records.extend(parser.feed(data[start : start + step]))
    return records, parser.finish()


def test_literal_file_as_the_docstring_describes_it() -> None:
    header = b'{"catalog":"c","profile":"p","source":"s"}'
    data = (
        b"TGWCAP\r\n"
        + b"\x01\x00"  # version 1
        + len(header).to_bytes(4, "little")
        + header
        + b"\x01"  # data
        + (1_700_000_000_123_456_789).to_bytes(8, "little")
        + b"\x03\x00\x00\x00"
        + b"\xaa\x55\x01"
        + b"\x02"  # gap of 300 bytes
        + (1_700_000_001_000_000_000).to_bytes(8, "little")
        + b"\x08\x00\x00\x00"
        + (300).to_bytes(8, "little")
        + b"\x04"  # closed
        + (1_700_000_002_000_000_000).to_bytes(8, "little")
        + b"\x02\x00\x00\x00"
        + b"EOF"[:2]
    )
    parser = CaptureParser()
    records = parser.feed(data)
    assert parser.header is not None
    assert (parser.header.source, parser.header.profile, parser.header.catalog) == ("s", "p", "c")
    assert parser.header.part == 1
    assert records == [
        CaptureRecord(RecordKind.DATA, 1_700_000_000_123_456_789, b"\xaa\x55\x01"),
        CaptureRecord(RecordKind.GAP, 1_700_000_001_000_000_000, lost=300),
        CaptureRecord(RecordKind.CLOSED, 1_700_000_002_000_000_000, b"EO"),
    ]
    assert records[0].time == pytest.approx(1_700_000_000.123456789)
    assert parser.finish() is None


def test_writer_and_parser_agree_on_header_and_records() -> None:
    data = (
        file_header(HEADER)
        + record(RecordKind.OPENED, 10, "/dev/ttyUSB0")
        + record(RecordKind.DATA, 11, b"\x00\x01")
        + record(RecordKind.GAP, 12, 7)
        + record(RecordKind.CLOSED, 13, "hung up")
    )
    parser = CaptureParser()
    records = parser.feed(data)
    assert parser.header is not None
    assert parser.header.to_json() == HEADER.to_json()
    assert [(r.kind, r.time_ns) for r in records] == [
        (RecordKind.OPENED, 10),
        (RecordKind.DATA, 11),
        (RecordKind.GAP, 12),
        (RecordKind.CLOSED, 13),
    ]
    assert records[0].text == "/dev/ttyUSB0"
    assert records[2].lost == 7
    assert records[3].text == "hung up"


@given(
    st.lists(st.binary(min_size=0, max_size=300), max_size=20),
    st.integers(min_value=1, max_value=64),
)
def test_any_chunking_gives_the_same_records(chunks: list[bytes], step: int) -> None:
    data = file_header(HEADER) + b"".join(
        record(RecordKind.DATA, index, chunk) for index, chunk in enumerate(chunks)
    )
    records, truncation = parse(data, step)
    assert truncation is None
    assert [r.data for r in records] == chunks
    assert [r.time_ns for r in records] == list(range(len(chunks)))


def test_unknown_header_keys_are_kept() -> None:
    parser = CaptureParser()
    header = b'{"source":"s","profile":"p","catalog":"c","future":[1,2]}'
    parser.feed(b"TGWCAP\r\n\x01\x00" + len(header).to_bytes(4, "little") + header)
    assert parser.header is not None
    assert parser.header.extra == {"future": [1, 2]}
    assert parser.header.to_json()["future"] == [1, 2]


def test_a_file_cut_mid_record_keeps_what_precedes_and_says_what_is_missing() -> None:
    whole = (
        file_header(HEADER)
        + record(RecordKind.DATA, 1, b"abc")
        + record(RecordKind.DATA, 2, b"0123456789")
    )
    records, truncation = parse(whole[:-4])
    assert [r.data for r in records] == [b"abc"]
    assert truncation is not None
    assert truncation.offset == len(file_header(HEADER)) + 13 + 3
    assert (truncation.have, truncation.need) == (13 + 6, 13 + 10)
    assert "truncated at byte" in truncation.describe()
    assert "19 of 23 bytes" in truncation.describe()


def test_a_file_cut_inside_its_header() -> None:
    records, truncation = parse(file_header(HEADER)[:20])
    assert records == []
    assert truncation is not None
    assert truncation.offset == 0
    assert truncation.need == len(file_header(HEADER))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xaa\x55\x01\x02", "not a tgw capture"),
        (b"TGWCAP\n\x01\x00", "line endings were converted"),
        (b"TGWCAP\r\n\x02\x00\x02\x00\x00\x00{}", "format version 2; this tgw reads version 1"),
        (b"TGWCAP\r\n\x01\x00\x03\x00\x00\x00{x}", "header: not valid JSON"),
        (b"TGWCAP\r\n\x01\x00\x02\x00\x00\x00[]", "header: expected a JSON object"),
        (b'TGWCAP\r\n\x01\x00\x0c\x00\x00\x00{"source":1}', "'source': expected a non-empty"),
    ],
)
def test_what_is_not_a_capture_is_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(CaptureFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CaptureParser().feed(data)


def test_an_unknown_record_kind_names_its_offset() -> None:
    head = file_header(HEADER)
    with pytest.raises(CaptureFormatError, match=f"byte {len(head)}: unknown record kind 9"):
        CaptureParser().feed(head + b"\x09" + bytes(12))
