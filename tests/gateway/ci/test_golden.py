"""Golden comparison: alignment, key-by-key changes and their descriptions.

Most records are written by hand in the shape :func:`protocol.records.event_record` makes;
the end-to-end tests decode real dumps built with :class:`FrameEncoder`, change the bytes
(a frame lost, garbage inserted) and check that only that one change is reported.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ci import golden
from gateway.ci.golden import (
    ABSENT,
    VARYING_KEYS,
    Difference,
    comparable,
    compare,
    format_differences,
)
from protocol.decoder import StreamDecoder
from protocol.encoder import FrameEncoder
from protocol.records import dumps, event_record
from protocol.schema import Schema

Record = dict[str, Any]


def frame(offset: int, message: str | None, cmd: int, fields: dict[str, Any], raw: str) -> Record:
    record: Record = {
        "type": "frame",
        "offset": offset,
        "cmd": cmd,
        "message": message,
        "fields": fields,
    }
    if message is None:
        record["payload"] = raw[8:-2]
    record["raw"] = raw
    return record


def error(offset: int, kind: str, size: int, detail: str = "") -> Record:
    return {"type": "error", "offset": offset, "kind": kind, "size": size, "detail": detail}


def environment(offset: int, temperature: float, humidity: float = 40.0) -> Record:
    fields = {"temperature": temperature, "humidity": humidity, "pressure": 1013.2}
    return frame(offset, "environment", 16, fields, f"aa551008{int(temperature * 100):04x}00")


def power(offset: int, battery: int) -> Record:
    fields = {"battery": battery, "current": -5, "charge": 90}
    return frame(offset, "power", 18, fields, f"aa551205{battery:04x}fbff5a00")


def motion(offset: int, accel: list[float]) -> Record:
    return frame(offset, "motion", 17, {"accel": accel}, "aa55110600f40118fcfa0019")


def stream(count: int) -> list[Record]:
    """``count`` records alternating environment and power frames, each 11 bytes long."""
    records = []
    for index in range(count):
        offset = 11 * index
        if index % 2:
            records.append(power(offset, 3700 + index))
        else:
            records.append(environment(offset, 20.0 + index / 4))
    return records


def shifted(records: Sequence[Record], by: int) -> list[Record]:
    """Copies of ``records`` with offsets moved by ``by`` bytes."""
    return [{**copy.deepcopy(record), "offset": record["offset"] + by} for record in records]


def only(differences: list[Difference]) -> Difference:
    assert len(differences) == 1, format_differences(differences)
    return differences[0]


# Equal.


def test_identical_lists_have_no_differences() -> None:
    records = [*stream(6), error(66, "garbage", 3), motion(69, [0.5, -1.0, 0.25])]
    assert compare(records, copy.deepcopy(records)) == []
    assert compare([], []) == []


def test_time_keys_are_ignored() -> None:
    expected = stream(4)
    actual = [{**record, "time": 1_700_000_000.5 + index} for index, record in enumerate(expected)]
    assert compare(expected, actual) == []
    assert compare(actual, expected) == []
    assert "time" in VARYING_KEYS
    assert "time" not in comparable(actual[0])


def test_offsets_are_not_compared_but_shown() -> None:
    expected = stream(3)
    actual = shifted(expected, 5)
    assert compare(expected, actual) == []
    actual[1]["fields"]["battery"] = 1
    difference = only(compare(expected, actual))
    assert difference.offset == 11
    assert difference.actual_offset == 16
    assert difference.describe() == (
        "frame 2 (power, cmd 18) at offset 11 (now at offset 16): "
        "fields.battery: expected 3701, got 1"
    )


def test_two_nans_are_equal() -> None:
    expected = [environment(0, 21.5)]
    expected[0]["fields"]["temperature"] = math.nan
    actual = copy.deepcopy(expected)
    actual[0]["fields"]["temperature"] = float("nan")  # another NaN object
    assert compare(expected, actual) == []
    actual[0]["fields"]["temperature"] = 1.0
    assert only(compare(expected, actual)).changes == (("fields.temperature", math.nan, 1.0),)


def test_floats_compare_exactly() -> None:
    expected = [environment(0, 21.5)]
    actual = copy.deepcopy(expected)
    actual[0]["fields"]["humidity"] = 40.0 + 1e-12
    assert only(compare(expected, actual)).changes == (("fields.humidity", 40.0, 40.0 + 1e-12),)


def test_a_bool_is_not_a_number() -> None:
    expected = [frame(0, "heartbeat", 1, {"flags": {"charging": True}}, "aa55")]
    actual = copy.deepcopy(expected)
    actual[0]["fields"]["flags"]["charging"] = 1
    assert only(compare(expected, actual)).changes == (("fields.flags.charging", True, 1),)


def test_bytes_and_tuples_compare_as_their_json_reads_back() -> None:
    expected = [frame(0, "blob", 32, {"data": "00ff", "pair": [1, 2]}, "aa55")]
    actual = [frame(0, "blob", 32, {"data": b"\x00\xff", "pair": (1, 2)}, "aa55")]
    assert compare(expected, actual) == []
    assert comparable(actual[0])["fields"] == {"data": "00ff", "pair": [1, 2]}


# Changed.


def test_a_changed_field_is_one_changed_difference() -> None:
    expected = stream(20)
    actual = copy.deepcopy(expected)
    actual[11]["fields"]["battery"] = 3600
    actual[11]["raw"] = "aa5512050e10fbff5a00"
    difference = only(compare(expected, actual))
    assert difference.kind == "changed"
    assert difference.index == 12
    assert difference.offset == 121
    assert difference.changes == (("fields.battery", 3711, 3600),)  # not raw
    assert difference.label == "frame 12 (power, cmd 18) at offset 121"
    assert difference.describe() == (
        "frame 12 (power, cmd 18) at offset 121: fields.battery: expected 3711, got 3600"
    )


def test_several_changed_fields_are_listed_on_indented_lines() -> None:
    expected = [environment(345, 21.5)]
    actual = [environment(345, 22.0, humidity=41.0)]
    difference = only(compare(expected, actual))
    assert difference.describe() == (
        "frame 1 (environment, cmd 16) at offset 345:\n"
        "  fields.temperature: expected 21.5, got 22.0\n"
        "  fields.humidity: expected 40.0, got 41.0"
    )


def test_nested_lists_compare_by_key_path() -> None:
    expected = [motion(0, [0.5, -1.0, 0.25])]
    actual = [motion(0, [0.5, -1.0, 0.125])]
    assert only(compare(expected, actual)).changes == (("fields.accel[2]", 0.25, 0.125),)
    shorter = [motion(0, [0.5, -1.0])]
    difference = only(compare(expected, shorter))
    assert difference.changes == (("fields.accel[2]", 0.25, ABSENT),)
    assert difference.describe().endswith("fields.accel[2]: expected 0.25, got (absent)")


def test_keys_only_on_one_side_are_changes() -> None:
    expected = [power(0, 3700)]
    actual = copy.deepcopy(expected)
    del actual[0]["fields"]["charge"]
    actual[0]["sequence"] = 7
    assert only(compare(expected, actual)).changes == (
        ("fields.charge", 90, ABSENT),
        ("sequence", ABSENT, 7),
    )


def test_a_raw_only_difference_is_reported_as_raw() -> None:
    expected = [power(0, 3700), power(11, 3701)]
    actual = copy.deepcopy(expected)
    actual[1]["raw"] = "aa5512050e75fbff5a01"
    difference = only(compare(expected, actual))
    assert difference.changes == (("raw", "aa5512050e75fbff5a00", "aa5512050e75fbff5a01"),)
    assert difference.describe() == (
        "frame 2 (power, cmd 18) at offset 11: raw: differs from byte 9: "
        'expected "...75fbff5a00", got "...75fbff5a01"'
    )


def test_payload_is_reported_before_raw() -> None:
    expected = [frame(0, None, 0x99, {}, "aa559903616263ff")]
    actual = [frame(0, None, 0x99, {}, "aa559903616264ff")]
    difference = only(compare(expected, actual))
    assert difference.changes == (("payload", "616263", "616264"),)
    assert difference.describe() == (
        "frame 1 (unknown, cmd 153) at offset 0: payload: differs from byte 2: "
        'expected "616263", got "616264"'
    )


def test_an_error_record_that_changed() -> None:
    expected = [error(77, "bad_checksum", 9, "checksum 0x12, computed 0x13")]
    actual = [error(77, "bad_checksum", 9, "checksum 0x12, computed 0x14")]
    assert only(compare(expected, actual)).describe() == (
        "error 1 (bad_checksum, 9 bytes) at offset 77: "
        'detail: expected "checksum 0x12, computed 0x13", got "checksum 0x12, computed 0x14"'
    )


def test_labels_count_records_of_their_type_and_index_counts_all() -> None:
    expected = [
        error(0, "garbage", 2),
        power(2, 3700),
        error(13, "bad_checksum", 11),
        power(24, 3701),
        power(35, 3702),
    ]
    actual = copy.deepcopy(expected)
    actual[2]["size"] = 12
    actual[3]["fields"]["current"] = 0
    del actual[4]
    differences = compare(expected, actual)
    assert [(difference.kind, difference.index) for difference in differences] == [
        ("changed", 3),
        ("changed", 4),
        ("missing", 5),
    ]
    assert [difference.describe() for difference in differences] == [
        "error 2 (bad_checksum, 11 bytes) at offset 13: size: expected 11, got 12",
        "frame 2 (power, cmd 18) at offset 24: fields.current: expected -5, got 0",
        "missing: frame 3 (power, cmd 18) expected at offset 35",
    ]


def test_many_changes_in_one_record_are_cut() -> None:
    expected = [motion(0, [float(index) for index in range(15)])]
    actual = [motion(0, [float(-index - 1) for index in range(15)])]
    lines = only(compare(expected, actual)).describe().splitlines()
    assert lines[0] == "frame 1 (motion, cmd 17) at offset 0:"
    assert lines[1] == "  fields.accel[0]: expected 0.0, got -1.0"
    assert len(lines) == 1 + 10 + 1
    assert lines[-1] == "  ... and 5 more changes"


def test_long_values_are_cut() -> None:
    expected = [error(0, "bad_length", 4, "x" * 200)]
    actual = [error(0, "bad_length", 4, "y" * 200)]
    described = only(compare(expected, actual)).describe()
    assert described == (
        "error 1 (bad_length, 4 bytes) at offset 0: "
        f'detail: expected "{"x" * 75}...", got "{"y" * 75}..."'
    )


# Missing and extra.


def test_a_missing_frame_in_the_middle_is_one_missing_difference() -> None:
    expected = stream(20)
    actual = [*expected[:12], *shifted(expected[13:], -11)]  # later offsets shifted
    difference = only(compare(expected, actual))
    assert difference.kind == "missing"
    assert difference.index == 13
    assert difference.offset == 132
    assert difference.describe() == (
        "missing: frame 13 (environment, cmd 16) expected at offset 132"
    )


def test_an_extra_frame_is_one_extra_difference() -> None:
    expected = stream(20)
    inserted = environment(77, 30.0)
    actual = [*expected[:7], inserted, *shifted(expected[7:], 11)]
    difference = only(compare(expected, actual))
    assert difference.kind == "extra"
    assert difference.index == 8
    assert difference.offset == 77
    assert difference.describe() == "extra: frame (environment, cmd 16) at offset 77"


def test_a_new_error_record_is_one_extra_error() -> None:
    expected = stream(20)
    actual = [*expected[:1], error(11, "garbage", 3, "skipped 3 bytes"), *shifted(expected[1:], 3)]
    difference = only(compare(expected, actual))
    assert difference.kind == "extra"
    assert difference.index == 2
    assert difference.describe() == "extra: error (garbage, 3 bytes) at offset 11"


def test_a_frame_turned_into_an_error_is_missing_and_extra() -> None:
    expected = stream(6)
    actual = copy.deepcopy(expected)
    actual[3] = error(33, "bad_checksum", 11)
    assert [difference.describe() for difference in compare(expected, actual)] == [
        "missing: frame 4 (power, cmd 18) expected at offset 33",
        "extra: error (bad_checksum, 11 bytes) at offset 33",
    ]


def test_a_gap_record_is_labelled_with_its_size() -> None:
    expected = stream(4)
    actual = [*expected[:2], {"type": "gap", "offset": 22, "size": 1}, *expected[2:]]
    assert only(compare(expected, actual)).describe() == "extra: gap (1 byte) at offset 22"


def test_a_missing_frame_next_to_a_changed_one_pairs_the_most_alike() -> None:
    expected = [power(0, 3700), power(11, 3701), power(22, 3702), power(33, 3703)]
    changed = power(11, 3702)
    changed["fields"]["charge"] = 50
    changed["raw"] = "changed"
    actual = [expected[0], changed, expected[3]]  # 3701 lost, 3702 changed in one field
    assert [difference.describe() for difference in compare(expected, actual)] == [
        "missing: frame 2 (power, cmd 18) expected at offset 11",
        "frame 3 (power, cmd 18) at offset 22 (now at offset 11): "
        "fields.charge: expected 90, got 50",
    ]


def test_every_record_changed_and_one_lost_still_pairs_in_order() -> None:
    expected = stream(200)
    actual = copy.deepcopy([*expected[:100], *expected[101:]])
    for record in actual:
        record["raw"] += "00"  # e.g. a new trailer byte: every record differs in raw
    differences = compare(expected, actual)
    assert differences[0].describe() == (
        "frame 1 (environment, cmd 16) at offset 0: raw: differs from byte 7: "
        'expected "...0807d000", got "...0807d00000"'
    )
    assert [difference.kind for difference in differences].count("missing") == 1
    assert [difference.kind for difference in differences].count("changed") == 199
    assert not [difference for difference in differences if difference.kind == "extra"]


def test_everything_missing_or_extra() -> None:
    expected = stream(3)
    assert [difference.kind for difference in compare(expected, [])] == ["missing"] * 3
    assert [difference.index for difference in compare([], expected)] == [1, 2, 3]


@pytest.mark.parametrize(
    "budgets",
    [
        pytest.param({"MATCHER_WORK": 0}, id="myers"),
        pytest.param({"MATCHER_WORK": 0, "MYERS_WORK": 0}, id="resync"),
    ],
)
def test_long_repetitive_lists_align_without_sequence_matcher(
    monkeypatch: pytest.MonkeyPatch, budgets: dict[str, int]
) -> None:
    for name, value in budgets.items():
        monkeypatch.setattr(golden, name, value)
    expected = stream(300)
    actual = copy.deepcopy([*expected[:40], *expected[41:250], power(0, 1), *expected[250:]])
    actual[100]["fields"]["humidity"] = 0.0
    assert [(difference.kind, difference.index) for difference in compare(expected, actual)] == [
        ("missing", 41),
        ("changed", 102),
        ("extra", 250),
    ]


def lcs_length(a: Sequence[int], b: Sequence[int]) -> int:
    lengths = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            lengths[i + 1][j + 1] = (
                lengths[i][j] + 1 if x == y else max(lengths[i][j + 1], lengths[i + 1][j])
            )
    return lengths[-1][-1]


def assert_common_subsequence(a: Sequence[int], b: Sequence[int], matches: list[Any]) -> None:
    assert all(a[i] == b[j] for i, j in matches)
    assert all(i < k and j < n for (i, j), (k, n) in itertools.pairwise(matches))


SHORT_REPETITIVE = st.lists(st.integers(0, 3), max_size=14)


@settings(max_examples=300)
@given(a=SHORT_REPETITIVE, b=SHORT_REPETITIVE)
def test_alignments_are_common_subsequences_and_myers_finds_a_longest(
    a: list[int], b: list[int]
) -> None:
    assert_common_subsequence(a, b, golden._matches(a, b))  # SequenceMatcher's: not always longest
    if a and b:
        myers = golden._myers(a, b)
        assert myers is not None
        assert_common_subsequence(a, b, myers)
        assert len(myers) == lcs_length(a, b)
        assert_common_subsequence(a, b, golden._resync(a, b))


# format_differences.


def test_format_differences_limit() -> None:
    expected = stream(30)
    actual = [{**record, "fields": {**record["fields"], "extra": 1}} for record in expected]
    differences = compare(expected, actual)
    assert len(differences) == 30
    text = format_differences(differences, limit=3)
    assert text.splitlines() == [
        "frame 1 (environment, cmd 16) at offset 0: fields.extra: expected (absent), got 1",
        "frame 2 (power, cmd 18) at offset 11: fields.extra: expected (absent), got 1",
        "frame 3 (environment, cmd 16) at offset 22: fields.extra: expected (absent), got 1",
        "... and 27 more differences",
    ]
    assert len(format_differences(differences).splitlines()) == 21
    assert format_differences(differences[:20]).count("\n") == 19
    assert format_differences(differences[:21]).endswith("... and 1 more difference")
    assert format_differences([]) == ""
    with pytest.raises(ValueError, match="negative"):
        format_differences(differences, limit=-1)


# End to end: real dumps, decoded.


def decode(schema: Schema, data: bytes) -> list[Record]:
    """Decode ``data`` and read the records back from their JSON lines, as a golden file."""
    decoder = StreamDecoder(schema)
    events = [*decoder.feed(data), *decoder.finish()]
    return [_loads(dumps(event_record(event))) for event in events]


def _loads(line: bytes) -> Record:
    record: Record = orjson.loads(line)
    return record


def frames(schema: Schema) -> list[bytes]:
    encoder = FrameEncoder(schema)
    return [
        encoder.encode(
            "environment",
            {"temperature": 20 + index / 4, "humidity": 40.0, "pressure": 1013.2},
        )
        if index % 3 == 0
        else encoder.encode("motion", {"accel": [0.5, -1.0, index / 1000]})
        if index % 3 == 1
        else encoder.encode("power", {"battery": 3700 + index, "current": -5, "charge": 90})
        for index in range(30)
    ]


def test_decoded_dump_with_garbage_inserted(default_schema: Schema) -> None:
    parts = frames(default_schema)
    expected = decode(default_schema, b"".join(parts))
    actual = decode(default_schema, b"".join([*parts[:10], b"\x00\x01\x02", *parts[10:]]))
    offset = sum(map(len, parts[:10]))
    difference = only(compare(expected, actual))
    assert difference.describe() == f"extra: error (garbage, 3 bytes) at offset {offset}"


def test_decoded_dump_with_a_frame_lost(default_schema: Schema) -> None:
    parts = frames(default_schema)
    expected = decode(default_schema, b"".join(parts))
    actual = decode(default_schema, b"".join([*parts[:16], *parts[17:]]))
    offset = sum(map(len, parts[:16]))
    difference = only(compare(expected, actual))
    assert (
        difference.describe() == f"missing: frame 17 (motion, cmd 17) expected at offset {offset}"
    )


def test_decoded_dump_with_a_field_changed(default_schema: Schema) -> None:
    parts = frames(default_schema)
    expected = decode(default_schema, b"".join(parts))
    parts[5] = FrameEncoder(default_schema).encode(
        "power", {"battery": 3705, "current": -6, "charge": 90}
    )
    actual = decode(default_schema, b"".join(parts))
    offset = expected[5]["offset"]
    assert only(compare(expected, actual)).describe() == (
        f"frame 6 (power, cmd 18) at offset {offset}: fields.current: expected -5, got -6"
    )
