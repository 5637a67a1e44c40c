"""``tgw decode`` end to end: the real console script, run on dumps written to disk.

The dumps are built with :class:`FrameEncoder`; the command's output is read back as
JSON lines (stdout) and a one-line summary (stderr).
"""

from __future__ import annotations

import json
import random
import re
import string
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol.catalog import FieldSpec, FieldType, MessageSpec
from protocol.config import load_catalog, load_profile
from protocol.encoder import FrameEncoder
from protocol.schema import Schema, compile_schema, load_schema

TGW = Path(sys.executable).parent / "tgw"
EXIT_USAGE = 2

FRAME_KEYS = {"type", "offset", "cmd", "message", "fields", "raw"}
ERROR_KEYS = {"type", "offset", "kind", "size", "detail"}
ERROR_KINDS = {"garbage", "bad_length", "bad_checksum", "payload_mismatch", "truncated"}

SUMMARY = re.compile(
    r"tgw decode: (?P<name>.+): (?P<bytes>\d+) bytes, (?P<frames>\d+) frames "
    r"\((?P<unknown>\d+) unknown\), errors: (?P<errors>.+); (?P<skipped>\d+) bytes skipped"
)

POWER = {"battery": 3700, "current": -5, "charge": 90}
STATUS = {
    "uptime": 86400,
    "state": "running",
    "flags": {"charging": True, "low_battery": False, "sensor_fault": True, "link_quality": 2},
    "resets": 3,
}
UNKNOWN_CMD = 0x99

CUSTOM_PROFILE = """\
name = "tilde"
sync = "7E"
max_payload = 200
header = [
  { role = "length", width = 1 },
  { role = "cmd", width = 1 },
]

[checksum]
algorithm = "xor8"
span = "after_sync"
"""

CUSTOM_CATALOG = """\
name = "pinger"
byte_order = "big"

[[messages]]
cmd = 0x05
name = "ping"
fields = [
  { name = "count", type = "u16" },
  { name = "tag", type = "string", length = 4 },
]
"""


# Running tgw and reading its output.


@dataclass(frozen=True)
class Summary:
    name: str
    bytes_fed: int
    frames: int
    unknown_frames: int
    errors: dict[str, int]
    bytes_skipped: int


@dataclass(frozen=True)
class Decoded:
    """What one ``tgw decode`` run printed."""

    returncode: int
    records: list[dict[str, Any]]
    stderr: str

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [record for record in self.records if record["type"] == "frame"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [record for record in self.records if record["type"] == "error"]

    def summary(self) -> Summary:
        [line] = self.stderr.splitlines()
        match = SUMMARY.fullmatch(line)
        assert match is not None, line
        errors: dict[str, int] = {}
        if match["errors"] != "none":
            for item in match["errors"].split(", "):
                kind, count = item.split(" ")
                errors[kind] = int(count)
        return Summary(
            name=match["name"],
            bytes_fed=int(match["bytes"]),
            frames=int(match["frames"]),
            unknown_frames=int(match["unknown"]),
            errors=errors,
            bytes_skipped=int(match["skipped"]),
        )


def run_tgw(
    *arguments: str | Path, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(TGW), *map(str, arguments)],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        check=False,
        timeout=300,
    )


def parse_records(stdout: bytes) -> list[dict[str, Any]]:
    """Parse stdout as JSON lines, checking the shape of every record."""
    records: list[dict[str, Any]] = []
    assert not stdout or stdout.endswith(b"\n")
    for line in stdout.decode("utf-8").splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        if record["type"] == "frame":
            extra = {"payload"} if record["message"] is None else set()
            optional = {"sequence", "address"}
            assert FRAME_KEYS | extra <= set(record) <= FRAME_KEYS | extra | optional, line
            assert isinstance(record["cmd"], int)
            assert isinstance(record["fields"], dict)
            assert bytes.fromhex(record["raw"])
        else:
            assert record["type"] == "error", line
            assert ERROR_KEYS <= set(record) <= ERROR_KEYS | {"cmd"}, line
            assert record["kind"] in ERROR_KINDS
            assert record["size"] > 0
            assert isinstance(record["detail"], str)
        assert isinstance(record["offset"], int)
        records.append(record)
    return records


def decode(*arguments: str | Path, cwd: Path, stdin: bytes | None = None) -> Decoded:
    """Run ``tgw decode ARGUMENTS``; expect success and parse what it printed."""
    result = run_tgw("decode", *arguments, cwd=cwd, stdin=stdin)
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 0, stderr
    assert "Traceback" not in stderr
    return Decoded(result.returncode, parse_records(result.stdout), stderr)


def write_dump(tmp_path: Path, data: bytes, name: str = "dump.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# Random but valid messages.


def random_element(spec: FieldSpec, rng: random.Random) -> Any:
    """One valid engineering value of the element type of ``spec``."""
    if spec.type is FieldType.BYTES:
        assert spec.length is not None
        return rng.randbytes(spec.length)
    if spec.type is FieldType.STRING:
        assert spec.length is not None
        alphabet = string.ascii_letters + string.digits + " -_"
        return "".join(rng.choices(alphabet, k=rng.randint(0, spec.length)))
    if spec.enum is not None:
        return rng.choice(sorted(spec.enum.values()))
    if spec.bits is not None:
        return {
            bit.name: bool(rng.getrandbits(1)) if bit.width == 1 else rng.getrandbits(bit.width)
            for bit in spec.bits
        }
    if spec.type.is_float:
        raw: float = rng.uniform(-1e3, 1e3)
    else:
        bits = spec.type.bits
        signed = spec.type.value.startswith("i")
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        raw = rng.randint(low, high)
    if spec.scale is None and spec.offset is None:
        return raw
    return round(raw * (spec.scale or 1.0) + (spec.offset or 0.0), 9)


def random_fields(message: MessageSpec, rng: random.Random) -> dict[str, Any]:
    return {
        spec.name: random_element(spec, rng)
        if spec.count is None
        else [random_element(spec, rng) for _ in range(spec.count)]
        for spec in message.fields
    }


@dataclass(frozen=True)
class Dump:
    data: bytes
    frames: dict[int, bytes]
    """Offset -> raw bytes of every frame written."""
    fake_headers: list[int]
    """Offsets of noise runs that begin with a plausible fake header."""


def build_acceptance_dump(seed: int, *, frames: int = 10_000) -> Dump:
    """Frames of every default message; one in ten preceded by 1 to 32 bytes of noise.

    Half the noise runs are random bytes; a quarter begin with the sync bytes AA 55,
    a quarter with a fake header (AA 55, a cmd, a length of at most 256, little-endian).
    """
    rng = random.Random(seed)
    schema = load_schema()
    encoder = FrameEncoder(schema)
    messages = list(schema.catalog.messages)
    cmds = [message.cmd for message in messages]
    noisy = rng.sample(range(frames), frames // 10)
    kinds = ["random"] * (len(noisy) // 2) + ["sync"] * (len(noisy) // 4)
    kinds += ["header"] * (len(noisy) - len(kinds))
    rng.shuffle(kinds)
    noise_before = dict(zip(noisy, kinds, strict=True))
    data = bytearray()
    written: dict[int, bytes] = {}
    fake_headers: list[int] = []
    for index in range(frames):
        kind = noise_before.get(index)
        if kind is not None:
            size = rng.randint(1, 32)
            if kind == "random":
                prefix = b""
            elif kind == "sync":
                prefix = b"\xaa\x55"
            else:
                cmd = rng.choice([*cmds, rng.randrange(256)])
                prefix = b"\xaa\x55" + bytes([cmd]) + rng.randint(0, 256).to_bytes(2, "little")
                fake_headers.append(len(data))
            data += (prefix + rng.randbytes(size))[: max(size, len(prefix))]
        message = rng.choice(messages)
        frame = encoder.encode(message.name, random_fields(message, rng))
        written[len(data)] = frame
        data += frame
    return Dump(bytes(data), written, fake_headers)


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda seed: f"seed-{seed}")
def acceptance_dump(request: pytest.FixtureRequest) -> Dump:
    """Collisions happen or not by chance; the accounting below must hold either way
    (test_resync.py builds both kinds of collision on purpose)."""
    seed: int = request.param
    return build_acceptance_dump(seed)


# Output format.


def test_frames_and_errors_are_json_lines_and_the_summary_goes_to_stderr(
    tmp_path: Path, default_schema: Schema
) -> None:
    encoder = FrameEncoder(default_schema)
    power = encoder.encode("power", POWER)
    unknown = encoder.encode_raw(UNKNOWN_CMD, b"abc")
    mismatch = encoder.encode_raw(default_schema.names["power"].spec.cmd, b"\x01\x02\x03")
    bad_length = b"\xaa\x55\x10\xff\xff"
    status = encoder.encode("heartbeat", STATUS)
    corrupt = power[:-1] + bytes([power[-1] ^ 0xFF])
    parts = [power, b"\x00\x01\x02", unknown, corrupt, mismatch, bad_length, status, power[:-3]]
    offsets = [sum(len(part) for part in parts[:index]) for index in range(len(parts))]
    dump = write_dump(tmp_path, b"".join(parts))

    decoded = decode(dump, cwd=tmp_path)

    assert [(f["offset"], f["cmd"], f["message"], f["raw"]) for f in decoded.frames] == [
        (offsets[0], 0x12, "power", power.hex()),
        (offsets[2], UNKNOWN_CMD, None, unknown.hex()),
        (offsets[6], 0x01, "heartbeat", status.hex()),
    ]
    power_record, unknown_record, status_record = decoded.frames
    assert power_record["fields"] == POWER
    assert status_record["fields"] == STATUS
    assert unknown_record["fields"] == {}
    assert unknown_record["payload"] == b"abc".hex()
    assert "payload" not in power_record

    not_garbage = [e for e in decoded.errors if e["kind"] != "garbage"]
    assert [(e["kind"], e["offset"], e["size"], e.get("cmd")) for e in not_garbage] == [
        ("bad_checksum", offsets[3], len(corrupt), 0x12),
        ("payload_mismatch", offsets[4], len(mismatch), 0x12),
        ("bad_length", offsets[5], len(bad_length), 0x10),
        ("truncated", offsets[7], len(power) - 3, 0x12),
    ]
    garbage = [e for e in decoded.errors if e["kind"] == "garbage"]
    assert (offsets[1], 3) in [(e["offset"], e["size"]) for e in garbage]

    summary = decoded.summary()
    assert summary.name == str(dump)
    assert summary.bytes_fed == dump.stat().st_size
    assert summary.frames == 3
    assert summary.unknown_frames == 1
    assert summary.errors == Counter(e["kind"] for e in decoded.errors)
    # one fault, one error: skipped bytes are garbage or a rejected frame's, never both
    assert summary.bytes_skipped == sum(e["size"] for e in decoded.errors)


def test_clean_dump_reports_no_errors(tmp_path: Path, default_schema: Schema) -> None:
    encoder = FrameEncoder(default_schema)
    frames = [encoder.encode("power", POWER), encoder.encode("heartbeat", STATUS)] * 3
    decoded = decode(write_dump(tmp_path, b"".join(frames)), cwd=tmp_path)
    assert [bytes.fromhex(f["raw"]) for f in decoded.frames] == frames
    assert decoded.errors == []
    summary = decoded.summary()
    assert (summary.frames, summary.errors, summary.bytes_skipped) == (6, {}, 0)


def test_empty_dump(tmp_path: Path) -> None:
    decoded = decode(write_dump(tmp_path, b""), cwd=tmp_path)
    assert decoded.records == []
    assert decoded.summary() == Summary(str(tmp_path / "dump.bin"), 0, 0, 0, {}, 0)


def test_garbage_only_exits_0(tmp_path: Path) -> None:
    decoded = decode(write_dump(tmp_path, bytes(range(256)) * 4), cwd=tmp_path)
    assert decoded.frames == []
    assert decoded.errors
    assert decoded.summary().bytes_skipped == 1024


# Inputs and options.


def test_dash_reads_stdin(tmp_path: Path, default_schema: Schema) -> None:
    frame = FrameEncoder(default_schema).encode("power", POWER)
    decoded = decode("-", cwd=tmp_path, stdin=b"\x00" + frame)
    assert [(f["offset"], f["fields"]) for f in decoded.frames] == [(1, POWER)]
    assert decoded.summary().name == "stdin"
    assert decoded.summary().bytes_fed == len(frame) + 1


def test_shipped_profile_by_name(tmp_path: Path) -> None:
    encoder = FrameEncoder(load_schema("addressed-crc16"))
    frames = [
        encoder.encode("power", POWER, header={"sequence": 7, "address": 3}),
        encoder.encode("heartbeat", STATUS, header={"sequence": 8, "address": 3}),
        encoder.encode_raw(0x1234, b"\xff", header={"sequence": 9, "address": 4}),
    ]
    dump = write_dump(tmp_path, b"".join(frames))

    decoded = decode(dump, "--profile", "addressed-crc16", cwd=tmp_path)

    records = [
        (f["message"], f["cmd"], f["sequence"], f["address"], f["raw"]) for f in decoded.frames
    ]
    assert records == [
        ("power", 0x12, 7, 3, frames[0].hex()),
        ("heartbeat", 0x01, 8, 3, frames[1].hex()),
        (None, 0x1234, 9, 4, frames[2].hex()),
    ]
    assert decoded.frames[0]["fields"] == POWER
    assert decoded.errors == []


def test_default_profile_records_have_no_sequence_or_address(
    tmp_path: Path, default_schema: Schema
) -> None:
    frame = FrameEncoder(default_schema).encode("power", POWER)
    [record] = decode(write_dump(tmp_path, frame), cwd=tmp_path).records
    assert "sequence" not in record
    assert "address" not in record


def test_profile_and_catalog_files(tmp_path: Path) -> None:
    profile_path = tmp_path / "tilde.toml"
    catalog_path = tmp_path / "pinger.toml"
    profile_path.write_text(CUSTOM_PROFILE, encoding="utf-8")
    catalog_path.write_text(CUSTOM_CATALOG, encoding="utf-8")
    encoder = FrameEncoder(compile_schema(load_profile(profile_path), load_catalog(catalog_path)))
    ping = encoder.encode("ping", {"count": 0x0102, "tag": "abc"})
    xor = 0x06 ^ 0x05 ^ 0x01 ^ 0x02 ^ 0x61 ^ 0x62 ^ 0x63
    assert ping == bytes.fromhex("7E 06 05 0102 61626300") + bytes([xor])
    dump = write_dump(tmp_path, b"\x00\x7e\xff" + ping + encoder.encode_raw(0x09, b""))

    decoded = decode(dump, "--profile", profile_path, "--catalog", catalog_path, cwd=tmp_path)

    assert [(f["offset"], f["message"], f["fields"]) for f in decoded.frames] == [
        (3, "ping", {"count": 0x0102, "tag": "abc"}),
        (3 + len(ping), None, {}),
    ]
    assert [(e["kind"], e["offset"]) for e in decoded.errors if e["kind"] != "garbage"] == [
        ("bad_length", 1)
    ]


def test_catalog_file_with_the_default_profile(tmp_path: Path) -> None:
    catalog_path = tmp_path / "pinger.toml"
    catalog_path.write_text(CUSTOM_CATALOG, encoding="utf-8")
    encoder = FrameEncoder(compile_schema(load_profile(), load_catalog(catalog_path)))
    ping = encoder.encode("ping", {"count": 513, "tag": "wxyz"})
    power_cmd = 0x12  # a default message, unknown to this catalog
    unknown = encoder.encode_raw(power_cmd, b"\x00" * 5)

    decoded = decode(write_dump(tmp_path, ping + unknown), "--catalog", catalog_path, cwd=tmp_path)

    assert [(f["message"], f["fields"]) for f in decoded.frames] == [
        ("ping", {"count": 513, "tag": "wxyz"}),
        (None, {}),
    ]


# Failures of the command itself: exit 2, one line, no traceback.


def check_usage_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """Assert exit 2, nothing on stdout and exactly one line on stderr; return that line."""
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == EXIT_USAGE, stderr
    assert result.stdout == b""
    assert "Traceback" not in stderr
    [line] = stderr.splitlines()
    assert stderr == line + "\n"
    assert line.startswith("tgw: error: ")
    return line


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param(["absent.bin"], ["absent.bin", "no such file"], id="missing-file"),
        pytest.param(["folder"], ["folder", "is a directory"], id="directory"),
        pytest.param(
            ["dump.bin", "--profile", "bad-profile.toml"],
            ["bad-profile.toml", "header[1].width", "1, 2 or 4"],
            id="invalid-profile-file",
        ),
        pytest.param(
            ["dump.bin", "--catalog", "bad-catalog.toml"],
            ["bad-catalog.toml", "messages[1].name", "letters, digits and '_'"],
            id="invalid-catalog-file",
        ),
        pytest.param(
            ["dump.bin", "--profile", "absent.toml"],
            ["absent.toml", "no such file"],
            id="missing-profile-file",
        ),
        pytest.param(
            ["dump.bin", "--profile", "no-such-profile"],
            ["no-such-profile", "not a shipped profile", "addressed-crc16, default"],
            id="unknown-profile-name",
        ),
        pytest.param(
            ["dump.bin", "--catalog", "no-such-catalog"],
            ["no-such-catalog", "not a shipped catalog", "default"],
            id="unknown-catalog-name",
        ),
        pytest.param(
            ["absent.bin", "--profile", "no-such-profile"],
            ["no-such-profile"],
            id="configuration-is-checked-first",
        ),
    ],
)
def test_command_failure_exits_2_with_one_line(
    tmp_path: Path, arguments: list[str], expected: list[str]
) -> None:
    (tmp_path / "folder").mkdir()
    write_dump(tmp_path, b"")
    (tmp_path / "bad-profile.toml").write_text(
        CUSTOM_PROFILE.replace('{ role = "cmd", width = 1 }', '{ role = "cmd", width = 3 }'),
        encoding="utf-8",
    )
    (tmp_path / "bad-catalog.toml").write_text(
        CUSTOM_CATALOG + '\n[[messages]]\ncmd = 6\nname = "not a name"\n', encoding="utf-8"
    )
    line = check_usage_error(run_tgw("decode", *arguments, cwd=tmp_path))
    for fragment in expected:
        assert fragment in line


def test_decode_without_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run_tgw("decode", cwd=tmp_path)
    stderr = result.stderr.decode("utf-8")
    assert result.returncode == EXIT_USAGE
    assert result.stdout == b""
    assert "Traceback" not in stderr
    assert stderr == (
        "tgw decode: error: the following arguments are required: FILE (see 'tgw decode --help')\n"
    )


def test_early_close_of_stdout_prints_no_traceback(tmp_path: Path, acceptance_dump: Dump) -> None:
    dump = write_dump(tmp_path, acceptance_dump.data)
    with subprocess.Popen(
        [str(TGW), "decode", str(dump)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # like `| head -1`: the reader goes away
        stderr = process.stderr.read().decode("utf-8")
        returncode = process.wait(timeout=300)
    assert json.loads(first)["type"] in ("frame", "error")
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert "Exception ignored" not in stderr
    assert returncode == 0


def test_write_error_on_stdout_is_one_line(tmp_path: Path, default_schema: Schema) -> None:
    frame = FrameEncoder(default_schema).encode("power", POWER)
    dump = write_dump(tmp_path, frame * 1000)
    with Path("/dev/full").open("wb") as full:
        result = subprocess.run(
            [str(TGW), "decode", str(dump)],
            stdout=full,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            check=False,
            timeout=300,
        )
    stderr = result.stderr.decode("utf-8")
    assert result.returncode != 0
    assert "Traceback" not in stderr
    [line] = stderr.splitlines()
    assert line.startswith("tgw: error: ")


# The acceptance scenario.


def overlaps(start: int, size: int, spans: Iterable[tuple[int, int]]) -> bool:
    return any(start < end and other < start + size for other, end in spans)


def frame_spans(records: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(r["offset"], r["offset"] + len(r["raw"]) // 2) for r in records]


def is_default_frame(data: bytes, offset: int, size: int) -> bool:
    """True if ``size`` bytes at ``offset`` form a default-profile frame: AA 55, cmd,
    a little-endian length that matches, and a matching sum8 (checked by hand here)."""
    candidate = data[offset : offset + size]
    return (
        len(candidate) == size >= 6
        and candidate[:2] == b"\xaa\x55"
        and int.from_bytes(candidate[3:5], "little") == size - 6
        and sum(candidate[:-1]) & 0xFF == candidate[-1]
    )


def test_acceptance_every_valid_frame_is_reported(tmp_path: Path, acceptance_dump: Dump) -> None:
    dump = write_dump(tmp_path, acceptance_dump.data)
    decoded = decode(dump, cwd=tmp_path)

    data = acceptance_dump.data
    written = {offset: raw.hex() for offset, raw in acceptance_dump.frames.items()}
    emitted = [(f["offset"], f["raw"]) for f in decoded.frames]
    assert len(set(emitted)) == len(emitted)
    reported = [f for f in decoded.frames if written.get(f["offset"]) == f["raw"]]
    collisions = [f for f in decoded.frames if written.get(f["offset"]) != f["raw"]]
    mismatches = [e for e in decoded.errors if e["kind"] == "payload_mismatch"]
    missing = sorted(set(written) - {f["offset"] for f in reported})

    # Frames lost to checksum collisions: a fake header whose sum8 happens to match
    # swallows the bytes up to its "checksum", reported as a frame that was never
    # written. Every lost frame must overlap such a collision; none may be lost
    # otherwise. A collision of a known cmd with the wrong payload length is reported
    # as payload_mismatch and the hunt resumes inside it, so it loses nothing.
    swallowed = frame_spans(collisions)
    for mismatch in mismatches:
        assert is_default_frame(data, mismatch["offset"], mismatch["size"])
    for offset in missing:
        assert overlaps(offset, len(written[offset]) // 2, swallowed), f"frame at {offset} lost"
    # A collision is a genuine sum8 match, found where no reported frame is.
    for start, end in swallowed:
        assert is_default_frame(data, start, end - start), start
        assert not overlaps(start, 1, frame_spans(reported)), start
    for record in collisions:
        assert (
            bytes.fromhex(record["raw"])
            == data[record["offset"] : record["offset"] + len(record["raw"]) // 2]
        )
    names = {message.cmd: message.name for message in load_catalog().messages}
    assert all(record["message"] == names[record["cmd"]] for record in reported)

    # Every fake header is rejected where it starts, unless a collision swallowed it.
    events_at = {r["offset"] for r in decoded.records if r.get("kind") != "garbage"}
    for offset in acceptance_dump.fake_headers:
        assert offset in events_at or overlaps(offset, 1, swallowed), offset

    # The summary counts what was printed, collisions included.
    summary = decoded.summary()
    assert summary.bytes_fed == len(acceptance_dump.data)
    assert summary.frames == len(decoded.frames) == len(written) - len(missing) + len(collisions)
    assert summary.unknown_frames == sum(1 for f in collisions if f["message"] is None)
    assert summary.errors == Counter(e["kind"] for e in decoded.errors)
    assert summary.errors.get("payload_mismatch", 0) == len(mismatches)
    in_frames = sum(len(f["raw"]) // 2 for f in decoded.frames)
    assert summary.bytes_skipped == len(acceptance_dump.data) - in_frames
