"""`tgw decode` and `tgw check` on every input form; `check` against golden files, its
thresholds and its JUnit report; progress bars on a terminal only."""

from __future__ import annotations

import fcntl
import json
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from protocol.capture import CaptureHeader, RecordKind, file_header, record
from tests.fwsim.helpers import read_until_hangup, run

JUNIT_XSD = Path(__file__).parent / "ci" / "junit.xsd"
TGW = Path(sys.executable).parent / "tgw"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ ")
UNKNOWN_FRAME = bytes.fromhex("aa557e0000") + bytes([(0xAA + 0x55 + 0x7E) % 256])
"""A valid frame of command 0x7e, which the default catalog does not know."""


def frames_of(stdout: str) -> list[dict[str, Any]]:
    """The decoded records, without receive times (captures have them, dumps do not)."""
    records = [json.loads(line) for line in stdout.splitlines()]
    for item in records:
        item.pop("time", None)
    return records


def xxd(data: bytes) -> str:
    """``xxd`` output: offset, eight groups of two bytes, the ASCII column."""
    lines = []
    for start in range(0, len(data), 16):
        row = data[start : start + 16]
        groups = " ".join(row[i : i + 2].hex() for i in range(0, len(row), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{start:08x}: {groups:<39}  {text}")
    return "\n".join(lines) + "\n"


def hexdump_c(data: bytes) -> str:
    """``hexdump -C`` output (without squeezing), the final offset on the last line."""
    lines = []
    for start in range(0, len(data), 16):
        row = data[start : start + 16]
        left = " ".join(f"{b:02x}" for b in row[:8])
        right = " ".join(f"{b:02x}" for b in row[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{start:08x}  {left:<23}  {right:<23}  |{text}|")
    lines.append(f"{len(data):08x}")
    return "\n".join(lines) + "\n"


def terminal(data: bytes) -> str:
    """What a serial terminal's hex view prints: bytes in upper case, 16 a line."""
    return "\n".join(
        " ".join(f"{b:02X}" for b in data[start : start + 16]) for start in range(0, len(data), 16)
    )


def capture(data: bytes, pieces: int = 7) -> bytes:
    """``data`` as a capture file read in ``pieces`` chunks, with link events around it."""
    header = CaptureHeader(source="node-1", profile="default", catalog="default")
    step = max(1, len(data) // pieces)
    chunks = [data[start : start + step] for start in range(0, len(data), step)]
    return (
        file_header(header)
        + record(RecordKind.OPENED, 1, "/dev/ttyUSB0")
        + b"".join(record(RecordKind.DATA, 2 + i, chunk) for i, chunk in enumerate(chunks))
        + record(RecordKind.CLOSED, 99, "hung up")
    )


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw dump from fwsim: 300 frames, noise before some."""
    path = tmp_path_factory.mktemp("dumps") / "boot.bin"
    run("fwsim", "--output", path, "--count", "300", "--seed", "4", "--noise", "0.05")
    return path


def test_every_input_form_decodes_to_the_same_records(dump: Path, tmp_path: Path) -> None:
    data = dump.read_bytes()
    forms = {
        "raw.bin": data,
        "dump.tgwcap": capture(data),
        "xxd.txt": xxd(data).encode(),
        "hexdump.txt": hexdump_c(data).encode(),
        "terminal.txt": terminal(data).encode(),
    }
    outputs = {}
    for name, content in forms.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = run("tgw", "decode", path)
        outputs[name] = frames_of(result.stdout)
        assert f"{len(data)} bytes" in result.stderr, (name, result.stderr)
    expected = outputs.pop("raw.bin")
    assert sum(1 for r in expected if r["type"] == "frame") >= 300
    assert any(r["type"] == "error" for r in expected)  # the noise
    for name, records in outputs.items():
        assert records == expected, name


def test_input_format_overrides_the_guess(dump: Path, tmp_path: Path) -> None:
    text = tmp_path / "xxd.txt"
    text.write_text(xxd(dump.read_bytes()), encoding="utf-8")
    guessed = frames_of(run("tgw", "decode", text).stdout)
    assert guessed == frames_of(run("tgw", "decode", text, "--input-format", "hex").stdout)
    as_raw = frames_of(run("tgw", "decode", text, "--input-format", "raw").stdout)
    assert any(r["type"] == "frame" for r in guessed)
    assert all(r["type"] == "error" for r in as_raw)  # the text's own bytes: no frame
    result = run("tgw", "decode", dump, "--input-format", "capture", check=False)
    assert result.returncode == 2
    assert "not a tgw capture" in result.stderr


def test_hex_text_read_in_chunks_names_its_lines_across_them(dump: Path, tmp_path: Path) -> None:
    # Text read 64 KiB at a time: a character cut by a read, a line cut by a read, and
    # line numbers that go on from one read to the next.
    data = dump.read_bytes() * 40
    lines = [f"# {index} °C\n{line}" for index, line in enumerate(xxd(data).splitlines(True))]
    text = "".join(lines).encode()
    cut = text.index(b"\xc2\xb0", 65_536 - 200)  # a degree sign across the first 64 KiB
    assert cut < 65_536
    text = text[:cut] + b"\n#" + b"#" * (65_535 - cut - 2) + text[cut:]
    assert text[65_535:65_537] == "°".encode()
    path = tmp_path / "long.txt"
    path.write_bytes(text)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(data)
    assert frames_of(run("tgw", "decode", path).stdout) == frames_of(
        run("tgw", "decode", raw).stdout
    )
    bad = text.decode().splitlines(True)
    number = len(bad) - 100  # a data line near the end: its number, from 1
    number += 0 if bad[number - 1].startswith("000") else 1
    bad[number - 1] = bad[number - 1][:12] + "zz" + bad[number - 1][14:]
    path.write_text("".join(bad), encoding="utf-8")
    result = run("tgw", "decode", path, check=False)
    assert result.returncode == 2
    assert f"not readable as hex text: line {number}: " in result.stderr
    assert "is not hex" in result.stderr


def test_a_large_hex_dump_decodes_in_bounded_memory(dump: Path, tmp_path: Path) -> None:
    # 20 MB of xxd text: read whole, it took some 100 times its size (a 50 MB file met the
    # OOM killer); read a line at a time, it decodes with 512 MB of address space.
    tile = dump.read_bytes()
    tiles = 20_000_000 // (len(tile) * 17 // 4) + 1
    text = tmp_path / "large.txt"
    with text.open("wb") as file:
        subprocess.run(["xxd"], input=tile * tiles, stdout=file, check=True)
    assert text.stat().st_size > 20_000_000
    limit = 512 << 20

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run(
        [TGW, "decode", text],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_memory,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frames = sum(1 for r in frames_of(run("tgw", "decode", dump).stdout) if r["type"] == "frame")
    assert f"{len(tile) * tiles} bytes, {frames * tiles} frames" in result.stderr


def test_a_capture_gives_receive_times_and_its_schema(dump: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.tgwcap"
    path.write_bytes(capture(dump.read_bytes()))
    records = [json.loads(line) for line in run("tgw", "decode", path).stdout.splitlines()]
    assert all(isinstance(r["time"], float) for r in records)


def test_a_truncated_capture_decodes_what_precedes_and_says_so(dump: Path, tmp_path: Path) -> None:
    whole = capture(dump.read_bytes())
    path = tmp_path / "cut.tgwcap"
    path.write_bytes(whole[:-25])  # inside the last data record
    result = run("tgw", "decode", path)
    assert "truncated at byte" in result.stderr
    assert "the last record is incomplete" in result.stderr
    assert len(frames_of(result.stdout)) > 250
    path.write_bytes(whole[:30])  # inside the header
    result = run("tgw", "decode", path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"tgw: error: {path}: truncated: the capture ends inside its header (30 bytes); "
        "nothing to read"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"TGWCAP\n\x01\x00", "not a tgw capture: it does not begin with"),
        (b"AA 55 12 05\nAA 55 1\n", "not readable as hex text: line 2"),
        (
            b"TGWCAP\r\n\x01\x00\x02\x00\x00\x00{}\x09" + bytes(12),
            "header: 'source': expected a non-empty string",
        ),
    ],
)
def test_a_wrong_file_is_one_line_and_exit_2(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    for command in (["decode"], ["check"], ["replay", "--fast", "--port", "0"]):
        result = run("tgw", *command, path, check=False)
        assert result.returncode == 2, (command, result.stderr)
        assert message in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


# tgw check


def check(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    return run("tgw", "check", *arguments, check=False)


def golden_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_golden(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def golden(dump: Path, tmp_path: Path) -> Path:
    path = tmp_path / "golden.jsonl"
    result = check(dump, "--golden", path, "--update-golden")
    assert result.returncode == 0, result.stderr
    return path


def test_update_golden_writes_the_records_without_times_and_check_passes(
    dump: Path, golden: Path, tmp_path: Path
) -> None:
    lines = golden_lines(golden)
    assert {line["dump"] for line in lines} == {str(dump)}
    assert all("time" not in line for line in lines)
    assert [{k: v for k, v in line.items() if k != "dump"} for line in lines] == frames_of(
        run("tgw", "decode", dump).stdout
    )
    result = check(dump, "--golden", golden)
    assert result.returncode == 0, result.stdout
    assert f"PASS  {dump}" in result.stdout
    # A capture of the same bytes passes the same golden records: times are not compared.
    other = tmp_path / "boot.tgwcap"
    other.write_bytes(capture(dump.read_bytes()))
    lines_for_capture = [{**line, "dump": str(other)} for line in lines]
    write_golden(golden, lines + lines_for_capture)
    assert check(dump, other, "--golden", golden).returncode == 0


def test_a_changed_field_is_named_with_expected_and_got(dump: Path, golden: Path) -> None:
    lines = golden_lines(golden)
    index, line = next((i, x) for i, x in enumerate(lines) if x.get("message") == "environment")
    got = line["fields"]["temperature"]
    line["fields"]["temperature"] = got + 1
    write_golden(golden, lines)
    frame_number = sum(1 for x in lines[: index + 1] if x["type"] == "frame")
    result = check(dump, "--golden", golden)
    assert result.returncode == 1
    assert f"FAIL  {dump}" in result.stdout
    assert "1 difference from" in result.stdout
    assert (
        f"frame {frame_number} (environment, cmd 16) at offset {line['offset']}: "
        f"fields.temperature: expected {got + 1}, got {got}"
    ) in result.stdout


def test_a_missing_frame_and_an_extra_frame_are_one_line_each(dump: Path, golden: Path) -> None:
    lines = golden_lines(golden)
    frames = [i for i, x in enumerate(lines) if x["type"] == "frame"]
    extra = lines[frames[10]]  # the dump has it, the golden file will not: "extra"
    missing = dict(lines[frames[200]])  # a frame the dump does not have: "missing"
    missing["message"], missing["cmd"] = "power", 18
    missing["fields"] = {"battery": 1, "current": 2, "charge": 3}
    del lines[frames[10]]
    lines.insert(frames[150], missing)
    write_golden(golden, lines)
    result = check(dump, "--golden", golden)
    assert result.returncode == 1
    assert "2 differences from" in result.stdout
    diff = [line.strip() for line in result.stdout.splitlines() if line.startswith("      ")]
    assert len(diff) == 2, result.stdout
    assert diff[0].startswith("extra: frame")
    assert f"at offset {extra['offset']}" in diff[0]
    assert diff[1].startswith("missing: frame")
    assert "(power, cmd 18)" in diff[1]


def test_thresholds(dump: Path, tmp_path: Path) -> None:
    errors = sum(1 for r in frames_of(run("tgw", "decode", dump).stdout) if r["type"] == "error")
    assert errors > 0
    assert check(dump).returncode == 0  # no golden file, no thresholds: nothing fails
    result = check(dump, "--max-errors", str(errors - 1))
    assert result.returncode == 1
    assert f"{errors} errors, more than --max-errors {errors - 1}" in result.stdout
    assert check(dump, "--max-errors", str(errors)).returncode == 0
    result = check(dump, "--max-error-rate", "0.0001")
    assert result.returncode == 1
    assert "error rate" in result.stdout
    assert check(dump, "--max-error-rate", "0.5").returncode == 0
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(dump.read_bytes()[:100] + UNKNOWN_FRAME)
    result = check(unknown)
    assert result.returncode == 1
    assert "1 frame(s) of commands the catalog does not know" in result.stdout
    assert check(unknown, "--allow-unknown").returncode == 0


def test_junit_report_validates_one_case_per_dump(dump: Path, golden: Path, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(UNKNOWN_FRAME)
    missing = tmp_path / "absent.bin"
    report = tmp_path / "report.xml"
    result = check(dump, unknown, missing, "--golden", golden, "--junit", report)
    assert result.returncode == 2  # one dump could not be read at all
    schema = xmlschema.XMLSchema(JUNIT_XSD)
    schema.validate(report)
    suites = schema.to_dict(report)
    assert isinstance(suites, dict)
    suite = suites["testsuite"][0]
    assert (suite["@tests"], suite["@failures"], suite["@errors"]) == (3, 1, 1)
    cases = {case["@name"]: case for case in suite["testcase"]}
    assert set(cases) == {str(dump), str(unknown), str(missing)}
    assert "failure" not in cases[str(dump)]
    assert "no golden records for" in str(cases[str(unknown)]["failure"])
    assert "cannot open" in str(cases[str(missing)]["error"])


def test_junit_failures_are_named_by_what_failed(dump: Path, golden: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed.bin"
    changed.write_bytes(dump.read_bytes()[:-3])  # the last frame truncated
    cut = tmp_path / "cut.tgwcap"
    cut.write_bytes(capture(dump.read_bytes())[:-25])
    unknown = tmp_path / "unknown.bin"
    unknown.write_bytes(UNKNOWN_FRAME)
    lines = golden_lines(golden)
    write_golden(golden, lines + [{**line, "dump": str(changed)} for line in lines])
    report = tmp_path / "report.xml"
    check(dump, changed, "--golden", golden, "--max-errors", "0", "--junit", report)
    check(dump, "--max-errors", "0", "--junit", tmp_path / "threshold.xml")
    check(cut, unknown, "--junit", tmp_path / "other.xml")
    types = {}
    for name in ("report.xml", "threshold.xml", "other.xml"):
        suite = xmlschema.XMLSchema(JUNIT_XSD).to_dict(tmp_path / name)
        assert isinstance(suite, dict)
        for case in suite["testsuite"][0]["testcase"]:
            types[(name, case["@name"])] = case["failure"]["@type"]
    assert types == {
        ("report.xml", str(dump)): "threshold exceeded",
        ("report.xml", str(changed)): "threshold exceeded, golden difference",
        ("threshold.xml", str(dump)): "threshold exceeded",
        ("other.xml", str(cut)): "truncated capture",
        ("other.xml", str(unknown)): "unknown commands",
    }


# Progress


def test_progress_shows_on_a_terminal_and_nowhere_else(dump: Path) -> None:
    quiet = run("tgw", "decode", dump)
    assert quiet.stderr.splitlines() == [quiet.stderr.strip()]  # the summary alone
    controller, terminal_side = os.openpty()
    fcntl.ioctl(terminal_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = subprocess.Popen(
            [str(TGW), "decode", str(dump)], stdout=subprocess.DEVNULL, stderr=terminal_side
        )
        os.close(terminal_side)
        shown = read_until_hangup(controller).decode(errors="replace")
        assert process.wait(timeout=60) == 0
    finally:
        os.close(controller)
    assert f"decoding {dump}" in shown
    assert "tgw decode:" in shown  # the summary still comes


def terminal_pair() -> tuple[int, int]:
    """A PTY sized like a terminal window: (controller, terminal side)."""
    controller, terminal_side = os.openpty()
    fcntl.ioctl(terminal_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    return controller, terminal_side


def test_no_progress_bar_when_the_records_go_to_the_same_terminal(dump: Path) -> None:
    controller, terminal_side = terminal_pair()
    try:
        process = subprocess.Popen(
            [str(TGW), "decode", str(dump)], stdout=terminal_side, stderr=terminal_side
        )
        os.close(terminal_side)
        shown = read_until_hangup(controller).decode()
        assert process.wait(timeout=60) == 0
    finally:
        os.close(controller)
    *records, summary = shown.splitlines()  # \r\n on a terminal; a bar would bring lone \r
    assert len(records) == len(frames_of(run("tgw", "decode", dump).stdout))
    assert all(json.loads(line)["type"] in ("frame", "error") for line in records)
    assert summary.startswith(f"tgw decode: {dump}: ")


def test_ctrl_c_prints_the_summary_of_what_was_decoded_and_exits_130(dump: Path) -> None:
    frames = [r for r in frames_of(run("tgw", "decode", dump).stdout) if r["type"] == "frame"]
    data = b"".join(bytes.fromhex(frame["raw"]) for frame in frames[:5])
    controller, terminal_side = terminal_pair()
    try:
        process = subprocess.Popen(
            [str(TGW), "decode", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=terminal_side,
        )
        os.close(terminal_side)
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(data)
        process.stdin.flush()
        decoded = [process.stdout.readline() for _ in range(5)]
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends; stdin is still open
        shown = read_until_hangup(controller).decode(errors="replace")
        assert process.wait(timeout=60) == 130
        process.stdin.close()
        process.stdout.close()
    finally:
        os.close(controller)
    assert all(json.loads(line)["type"] == "frame" for line in decoded)
    assert f"tgw decode: stdin: {len(data)} bytes, 5 frames (0 unknown), errors: none" in shown
    assert "interrupted" in shown
    assert "Traceback" not in shown


def test_log_lines_go_above_the_progress_bar_not_into_it(tmp_path: Path) -> None:
    dump = tmp_path / "long.bin"
    run("fwsim", "--output", dump, "--count", "3000", "--seed", "3")
    controller, terminal_side = terminal_pair()
    try:
        process = subprocess.Popen(
            [str(TGW), "replay", str(dump), "--speed", "1000", "--port", "0"],
            stdout=terminal_side,
            stderr=terminal_side,
        )
        os.close(terminal_side)
        shown = read_until_hangup(controller).decode(errors="replace")
        assert process.wait(timeout=60) == 0
    finally:
        os.close(controller)
    pieces = [piece.strip() for piece in re.split(r"[\r\n]", shown) if piece.strip()]
    bars = [piece for piece in pieces if piece.startswith("replaying")]
    logs = [piece for piece in pieces if not piece.startswith("replaying")]
    assert bars  # the bar showed
    assert not [bar for bar in bars if LOG_LINE.search(bar)]  # no log line glued to it
    assert all(LOG_LINE.match(line) for line in logs), logs
    assert any("replay finished: " in line for line in logs)


def test_a_gap_in_a_capture_ends_the_frame_in_progress_and_is_a_record(tmp_path: Path) -> None:
    frame = bytes.fromhex("aa551008006608a00f94270000ef")  # the README's environment frame
    path = tmp_path / "gap.tgwcap"
    path.write_bytes(
        file_header(CaptureHeader(source="n", profile="default", catalog="default"))
        + record(RecordKind.DATA, 1, frame + frame[:6])
        + record(RecordKind.GAP, 2, 40)
        + record(RecordKind.DATA, 3, frame[6:] + frame)
    )
    records = frames_of(run("tgw", "decode", path).stdout)
    assert [(r["type"], r["offset"]) for r in records] == [
        ("frame", 0),
        ("error", 14),  # the frame cut by the gap: truncated (one error, not garbage too)
        ("gap", 20),
        ("error", 20),  # the rest of it, after the gap: garbage
        ("frame", 28),
    ]
    assert [r.get("kind") for r in records[1:4:2]] == ["truncated", "garbage"]
    assert records[2]["size"] == 40
