"""Hex text back into bytes: every layout, the real dumpers, the errors, and the sniffing."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.hextext import HexTextError, HexTextParser, looks_like_hex_text
from protocol.hextext.tokens import try_area

FRAMES = bytes.fromhex("aa 55 12 05 00 74 0e fb ff 5a ec aa 55 10 08 00 66 08 a0 0f 94 27 00 00 ef")
"""Two frames of the default profile (the README's dump without its two noise bytes)."""


def parse(text: str) -> bytes:
    """The bytes of ``text`` fed whole to a parser."""
    parser = HexTextParser()
    return parser.feed(text) + parser.finish()


README_DUMP = b"\x00\x13" + FRAMES
"""The binary dump of the README, as ``tgw decode`` reads it."""

# 1. Byte tokens separated by whitespace: upper and lower case, tabs, blank lines.
SPACED = """\
AA 55 12 05 00 74 0E FB
ff 5a ec

aa 55 10\t08 00   66 08 A0
   0F 94 27 00 00 EF

"""

# 2. Continuous hex, an even number of digits a line.
CONTINUOUS = """\
AA5512050074
0efbff5aecaa55100800
6608a00f94270000ef
"""

# 3. 0x tokens: a C array as `xxd -i` writes it, and a bare list with a trailing comma.
C_ARRAY = """\
unsigned char frames_bin[] = {
  0xaa, 0x55, 0x12, 0x05, 0x00, 0x74, 0x0e, 0xfb, 0xff, 0x5a, 0xec, 0xaa,
  0x55, 0x10, 0x08, 0x00, 0x66, 0x08, 0xa0, 0x0f, 0x94, 0x27, 0x00, 0x00,
  0xef
};
unsigned int frames_bin_len = 25;
"""

OX_LIST = """\
0xAA, 0x55, 0x12, 0x05, 0x00, 0x74, 0x0E, 0xFB, 0xFF, 0x5A, 0xEC,
0xAA 0x55 0x10 0x08 0x0 0x66 0x8 0xA0
0x0F,0x94,0x27,0x00,0x00,0xEF,
"""

# 4. hexdump -C: offset, two groups of 8, ASCII between pipes, the total on the last line.
HEXDUMP_C = """\
00000000  aa 55 12 05 00 74 0e fb  ff 5a ec aa 55 10 08 00  |.U...t...Z..U...|
00000010  66 08 a0 0f 94 27 00 00  ef                       |f....'...|
00000019
"""

# 5. xxd: offset and colon, 2-byte groups, an undelimited ASCII column.
XXD = """\
00000000: aa55 1205 0074 0efb ff5a ecaa 5510 0800  .U...t...Z..U...
00000010: 6608 a00f 9427 0000 ef                   f....'...
"""

# 6. od -A x -t x1 (the total last), its -z variant, and offset-with-colon terminal styles.
OD = """\
000000 aa 55 12 05 00 74 0e fb ff 5a ec aa 55 10 08 00
000010 66 08 a0 0f 94 27 00 00 ef
000019
"""

OD_Z = """\
000000 aa 55 12 05 00 74 0e fb ff 5a ec aa 55 10 08 00  >.U...t...Z..U...<
000010 66 08 a0 0f 94 27 00 00 ef                       >f....'...<
000019
"""

COLON_OFFSETS = """\
0000: AA 55 12 05 00 74 0E FB
0008: FF 5A EC AA 55 10 08 00
0010: 66 08 A0 0F 94 27 00 00
0018: EF
"""

OX_COLON_OFFSETS = """\
0x0000: AA 55 12 05 00 74 0E FB FF 5A EC AA 55 10 08 00  .U...t...Z..U...
0x0010: 66 08 A0 0F 94 27 00 00 EF                       f....'...
"""

# 7. Comment lines, among byte tokens.
COMMENTED = """\
# captured from /dev/ttyUSB0 at 115200 baud
// power frame
AA 55 12 05 00 74 0E FB FF 5A EC
  # environment frame
AA 55 10 08 00 66 08 A0 0F 94 27 00 00 EF
"""

# 8. Logic analyser exports: Saleae Logic 1 and Logic 2, async serial.
LOGIC1_CSV = """\
Time [s],Value,Parity Error,Framing Error
0.000123000000000,0xAA,,
0.000209800000000,0x55,,
0.000296600000000,0x12,,
0.000383400000000,0x05,,
0.000470200000000,0x00,,
0.000557000000000,0x74,,
0.000643800000000,0x0E,,
0.000730600000000,0xFB,,
0.000817400000000,0xFF,,
0.000904200000000,0x5A,,
0.000991000000000,0xEC,,
0.001077800000000,0xAA,,
0.001164600000000,0x55,,
0.001251400000000,0x10,,
0.001338200000000,0x08,,
0.001425000000000,0x00,,
0.001511800000000,0x66,,
0.001598600000000,0x08,,
0.001685400000000,0xA0,,
0.001772200000000,0x0F,,
0.001859000000000,0x94,,
0.001945800000000,0x27,,
0.002032600000000,0x00,,
0.002119400000000,0x00,,
0.002206200000000,0xEF,,
"""

LOGIC2_CSV = """\
name,type,start_time,duration,"data"
"Async Serial","data",0.0001000,0.0000781,0xAA
"Async Serial","data",0.0001868,0.0000781,0x55
"Async Serial","data",0.0002736,0.0000781,0x12
"Async Serial","data",0.0003604,0.0000781,0x05
"Async Serial","data",0.0004472,0.0000781,0x00
"Async Serial","data",0.0005340,0.0000781,0x74
"Async Serial","data",0.0006208,0.0000781,0x0E
"Async Serial","data",0.0007076,0.0000781,0xFB
"Async Serial","data",0.0007944,0.0000781,0xFF
"Async Serial","data",0.0008812,0.0000781,0x5A
"Async Serial","data",0.0009680,0.0000781,0xEC
"Async Serial","data",0.0010548,0.0000781,0xAA
"Async Serial","data",0.0011416,0.0000781,0x55
"Async Serial","data",0.0012284,0.0000781,0x10
"Async Serial","data",0.0013152,0.0000781,0x08
"Async Serial","data",0.0014020,0.0000781,0x00
"Async Serial","data",0.0014888,0.0000781,0x66
"Async Serial","data",0.0015756,0.0000781,0x08
"Async Serial","data",0.0016624,0.0000781,0xA0
"Async Serial","data",0.0017492,0.0000781,0x0F
"Async Serial","data",0.0018360,0.0000781,0x94
"Async Serial","data",0.0019228,0.0000781,0x27
"Async Serial","data",0.0020096,0.0000781,0x00
"Async Serial","data",0.0020964,0.0000781,0x00
"Async Serial","data",0.0021832,0.0000781,0xEF
"""

LAYOUTS = {
    "spaced": SPACED,
    "continuous": CONTINUOUS,
    "c-array": C_ARRAY,
    "0x-list": OX_LIST,
    "hexdump-C": HEXDUMP_C,
    "xxd": XXD,
    "od": OD,
    "od-z": OD_Z,
    "colon-offsets": COLON_OFFSETS,
    "0x-colon-offsets": OX_COLON_OFFSETS,
    "commented": COMMENTED,
    "logic1-csv": LOGIC1_CSV,
    "logic2-csv": LOGIC2_CSV,
}


def test_the_fixture_is_the_two_frames_of_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert len(FRAMES) == 25
    assert README_DUMP.hex() in readme.replace("\\x", "")


@pytest.mark.parametrize("text", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_layout_reads_back_the_frames(text: str) -> None:
    assert parse(text) == FRAMES


@pytest.mark.parametrize("text", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("line_end", ["\r\n", "\r"], ids=["crlf", "cr"])
def test_every_layout_reads_the_same_with_other_line_ends(text: str, line_end: str) -> None:
    assert parse(text.replace("\n", line_end)) == FRAMES
    assert looks_like_hex_text(text.replace("\n", line_end).encode())


@pytest.mark.parametrize("text", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_layout_looks_like_hex_text(text: str) -> None:
    assert looks_like_hex_text(text.encode())


@pytest.mark.parametrize("text", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_layout_looks_like_hex_text_however_the_head_is_cut(text: str) -> None:
    # Once the head holds a whole line of bytes, cutting it later, even mid-line, keeps it
    # hex text: a last line without its newline is left out.
    encoded = text.encode()
    first = next(
        cut
        for cut in range(1, len(encoded) + 1)
        if encoded[cut - 1] == ord("\n") and looks_like_hex_text(encoded[:cut])
    )
    line_ends = [index + 1 for index, byte in enumerate(encoded) if byte == ord("\n")]
    assert first <= line_ends[min(2, len(line_ends) - 1)]  # by the end of the third line
    for cut in range(first, len(encoded) + 1):
        assert looks_like_hex_text(encoded[:cut]), encoded[:cut]


def test_empty_and_comment_only_text_read_as_no_bytes() -> None:
    assert parse("") == b""
    assert parse("\n  \n# nothing captured\n") == b""


def test_a_utf8_byte_order_mark_is_ignored() -> None:
    assert parse("\ufeff" + SPACED) == FRAMES


def test_a_one_line_c_array_with_comments_and_single_digit_bytes() -> None:
    text = "static const uint8_t f[] = {0xAA, 0x5, /* sync */ 0x0}; // a frame\n"
    assert parse(text) == b"\xaa\x05\x00"


def test_the_xxd_ascii_column_is_not_read_even_when_it_looks_like_hex() -> None:
    # `printf 'ab 12' | xxd` and `printf 'ab|12' | xxd`
    assert parse("00000000: 6162 2031 32                             ab 12\n") == b"ab 12"
    assert parse("00000000: 6162 7c31 32                             ab|12\n") == b"ab|12"


def test_the_hexdump_ascii_column_may_hold_pipes() -> None:
    assert (
        parse("00000000  61 62 7c 31 32                                    |ab|12|\n00000005\n")
        == b"ab|12"
    )


def test_a_dump_of_part_of_a_file_starts_at_its_offset() -> None:
    # `hexdump -C -s 16`: the offsets need not start at 0, but must follow on.
    text = "00000010  66 08 a0 0f 94 27 00 00  ef                       |f....'...|\n00000019\n"
    assert parse(text) == FRAMES[16:]


def test_a_one_line_dump_with_offset_and_no_total() -> None:
    assert parse("00000000  aa 55 12\n") == b"\xaa\x55\x12"


# ---- errors ----


def error_of(text: str) -> HexTextError:
    with pytest.raises(HexTextError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, ProtocolError)
    assert "\n" not in str(error)
    assert str(error) == f"line {error.line}: {error.problem}"
    return error


def test_an_odd_number_of_digits_names_the_line_and_the_token() -> None:
    error = error_of("AA5512050074\n0efbff5aecaa551008000\n")
    assert error.line == 2
    assert str(error) == "line 2: '0efbff5aecaa551008000' has an odd number of hex digits (21)"


def test_an_odd_token_among_byte_tokens() -> None:
    error = error_of("AA 55\n\nAA 5 12\n")
    assert str(error) == "line 3: '5' has an odd number of hex digits (1)"


def test_a_non_hex_token_names_the_line_and_the_token() -> None:
    error = error_of("AA 55 12\n# comment\nAA ZZ 12\n")
    assert str(error) == "line 3: 'ZZ' is not hex"


def test_a_long_bad_token_is_shortened_in_the_message() -> None:
    error = error_of("aa55" * 40 + "5\n")
    assert error.line == 1
    assert "'aa55aa55aa55aa55aa55...'" in error.problem
    assert "(161)" in error.problem


def test_a_0x_token_wider_than_a_byte_is_refused() -> None:
    error = error_of("0xAA, 0x55,\n0xAA55, 0x12\n")
    assert str(error) == "line 2: '0xAA55' is wider than one byte (byte order unknown)"


def test_a_lost_line_is_caught_by_the_offsets() -> None:
    lines = HEXDUMP_C.splitlines(keepends=True)
    error = error_of(lines[0] + lines[2])  # the second line lost: the total is off
    assert error.line == 2
    assert error.problem.startswith("offset '00000019' should be 00000010:")
    three_lines = "".join(
        f"{offset:08x}  {' '.join(['00'] * 8)}  {' '.join(['11'] * 8)}  |................|\n"
        for offset in (0, 16, 32)
    )
    kept = three_lines.splitlines(keepends=True)
    error = error_of(kept[0] + kept[2])
    assert error.line == 2
    assert error.problem.startswith("offset '00000020' should be 00000010:")
    assert "a line missing" in error.problem


def test_a_cut_line_is_caught_by_the_offsets() -> None:
    error = error_of("0000: AA 55 12 05\n0004: 00 74 0E\n0008: FB FF\n")
    assert error.line == 3
    assert error.problem.startswith("offset '0008' should be 0007:")


def test_octal_offsets_get_a_hint() -> None:
    text = subprocess.run(
        [_tool("od"), "-t", "x1"], input=FRAMES, capture_output=True, check=True
    ).stdout.decode()
    error = error_of(text)
    assert error.line == 2
    assert "od -A x" in error.problem


def test_a_squeezed_line_is_refused_with_advice() -> None:
    text = (
        "00000000  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n"
        "*\n"
        "00000030\n"
    )
    error = error_of(text)
    assert error.line == 2
    assert "'*'" in error.problem
    assert "hexdump -Cv" in error.problem
    assert looks_like_hex_text(text.encode())


@pytest.mark.parametrize(
    "command",
    [["hexdump", "-C"], ["od", "-A", "x", "-t", "x1"]],
    ids=["hexdump", "od"],
)
def test_the_real_tools_squeeze_repeats_and_that_is_refused(command: list[str]) -> None:
    text = _run([_tool(command[0]), *command[1:]], bytes(64))
    assert error_of(text).line == 2


@pytest.mark.parametrize(
    "command",
    [["od", "-A", "x", "-t", "x2"], ["hexdump"]],
    ids=["od-x2", "hexdump-words"],
)
def test_machine_order_words_are_refused(command: list[str]) -> None:
    text = _run([_tool(command[0]), *command[1:]], FRAMES)
    error = error_of(text)
    assert error.line == 1
    assert "byte order" in error.problem
    assert looks_like_hex_text(text.encode())


def test_a_line_without_an_offset_in_a_dump_with_offsets() -> None:
    error = error_of("0000: AA 55\nzz 12\n")
    assert str(error) == "line 2: expected an offset column (as on line 1), found 'zz'"


def test_a_colon_missing_in_a_dump_with_colons() -> None:
    error = error_of("0000: AA 55\n0002 12 05\n")
    assert str(error) == "line 2: expected ':' after the offset, as on line 1"


def test_a_bare_offset_is_only_allowed_last() -> None:
    error = error_of("000000 aa 55\n000002\n000002 12\n")
    assert error.line == 2
    assert "only the last line" in error.problem


def test_an_unclosed_c_array() -> None:
    error = error_of("// frames\nuint8_t f[] = {\n  0xAA, 0x55,\n")
    assert str(error) == "line 2: the '{' on this line is never closed by '}'"


def test_a_logic_analyser_row_with_a_framing_error_names_the_line() -> None:
    text = LOGIC1_CSV.replace("0.000383400000000,0x05,,", "0.000383400000000,0x05,,Error")
    error = error_of(text)
    assert str(error) == "line 5: the analyser flagged this byte: Framing Error = 'Error'"


def test_a_logic_analyser_row_with_a_parity_error_names_the_line() -> None:
    text = LOGIC1_CSV.replace("0.000209800000000,0x55,,", "0.000209800000000,0x55,Error,")
    assert str(error_of(text)) == ("line 3: the analyser flagged this byte: Parity Error = 'Error'")


def test_a_logic_analyser_export_in_another_radix_is_refused() -> None:
    text = "Time [s],Value,Parity Error,Framing Error\n0.000123,0xAA,,\n0.000209,U,,\n"
    error = error_of(text)
    assert error.line == 3
    assert error.problem.startswith("Value 'U' is not a hex byte such as 0x5A")
    assert "radix" in error.problem


def test_a_logic_analyser_export_of_two_analysers_is_refused() -> None:
    text = LOGIC2_CSV.replace(
        '"Async Serial","data",0.0001868', '"Async Serial [1]","data",0.0001868'
    )
    error = error_of(text)
    assert error.line == 3
    assert "export one analyser's table" in error.problem


def test_a_logic_analyser_row_that_is_not_a_data_byte_is_refused() -> None:
    text = 'name,type,start_time,duration,data\n"I2C","start",0.1,0.0000001,\n'
    assert str(error_of(text)) == "line 2: a row of type 'start', not a serial data byte"


_TEXTISH = st.text(alphabet=st.sampled_from(list('0123456789abcdefx:|*{},# \t\n\r.><"zZ')))


@settings(max_examples=300)
@given(st.one_of(st.text(), _TEXTISH))
def test_any_text_reads_or_raises_hex_text_error(text: str) -> None:
    error: HexTextError | None = None
    try:
        parse(text)
    except HexTextError as raised:
        error = raised
    if error is not None:
        assert "\n" not in str(error)
        assert 1 <= error.line <= len(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


# ---- streaming: any cut, a line at a time, linear work ----


def outcome(text: str, cuts: list[int] | None = None, **options: int) -> bytes | tuple[int, str]:
    """The bytes of ``text`` fed in pieces of ``cuts`` sizes (whole if None), or the error."""
    parser = HexTextParser(**options)
    data = bytearray()
    position = 0
    try:
        for size in cuts or []:
            data += parser.feed(text[position : position + size])
            position += size
        data += parser.feed(text[position:])
        data += parser.finish()
    except HexTextError as error:
        return (error.line, error.problem)
    return bytes(data)


@settings(max_examples=300)
@given(
    st.one_of(st.sampled_from(list(LAYOUTS.values())), st.text(), _TEXTISH),
    st.lists(st.integers(0, 9), max_size=40),
)
def test_text_cut_anywhere_reads_the_same(text: str, cuts: list[int]) -> None:
    whole = outcome(text)
    assert outcome(text, cuts) == whole
    assert outcome(text, [1] * len(text)) == whole


def test_every_layout_read_a_character_at_a_time() -> None:
    for text in LAYOUTS.values():
        for line_end in ("\n", "\r\n", "\r"):
            assert outcome(text.replace("\n", line_end), [1] * len(text) * 2) == FRAMES


def xxd_chunks(data: bytes, columns: int, lines: int) -> Iterator[str]:
    """``xxd -c columns`` text of ``data`` (whole lines), in chunks of ``lines`` lines."""
    rows = {data[start : start + columns] for start in range(0, len(data), columns)}
    shown = {
        row: " ".join(row[i : i + 2].hex() for i in range(0, columns, 2))
        + f"  {ascii_column(row)}\n"
        for row in rows
    }
    for first in range(0, len(data), columns * lines):
        yield "".join(
            f"{start:08x}: {shown[data[start : start + columns]]}"
            for start in range(first, min(len(data), first + columns * lines), columns)
        )


def test_memory_stays_bounded_whatever_the_size_of_the_text() -> None:
    # 20 MB of `xxd -c 64` text, made and fed chunk by chunk, never whole: the parser holds
    # a line (lines of 64 bytes rather than 16: fewer allocations for tracemalloc to trace).
    data = FRAMES * 64 * 3_500  # 5.6 MB: 87,500 lines
    expected = hashlib.sha256(data).hexdigest()
    parser = HexTextParser()
    digest = hashlib.sha256()
    text_size = 0
    tracemalloc.start()
    try:
        for chunk in xxd_chunks(data, 64, 250):
            text_size += len(chunk)
            digest.update(parser.feed(chunk))
        digest.update(parser.finish())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert text_size > 20_000_000
    assert digest.hexdigest() == expected
    assert peak < 4_000_000, f"{peak:,} bytes at the peak for {text_size:,} bytes of text"


def test_a_long_dump_line_is_tokenised_once_not_once_a_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 64 KB line of an offset, bytes apart by two spaces (each a gap where an ASCII column
    # could start) and its column: every gap was a new try of all the bytes before it,
    # 30 s for this line. Count the characters handed to the byte tokeniser instead.
    row = bytes(range(0x41, 0x5B)) * 505
    line = f"00000000  {'  '.join(f'{b:02x}' for b in row)}  |{row.decode()}|\n"
    assert len(line) > 65_536
    tokenised = 0

    def counting(area: str) -> bytes | None:
        nonlocal tokenised
        tokenised += len(area)
        return try_area(area)

    monkeypatch.setattr("protocol.hextext.dump.try_area", counting)
    assert parse(line) == row
    assert tokenised < 2 * len(line)
    tokenised = 0
    line = line[: line.index("  |")] + "\n"  # no column: every gap is tried, to the end
    assert parse(line) == row
    assert tokenised < 3 * len(line)


def test_a_line_of_continuous_hex_longer_than_a_line_may_be_is_read_in_pieces() -> None:
    # `xxd -p -c0` prints a file as one line: it is read a piece at a time.
    data = bytes(range(256)) * 4000
    text = data.hex() + "\n"
    parser = HexTextParser(max_line=4096)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        for start in range(0, len(text), 1000):
            digest.update(parser.feed(text[start : start + 1000]))
        digest.update(parser.finish())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256(data).digest()
    assert peak < 64_000


@pytest.mark.parametrize(
    "text",
    [
        "aa55 " * 30 + "0a0b0c 0d" + "ab" * 40 + "5 12\n",  # an odd token, long
        "aa " * 30 + "0x" + "12" * 40 + " 13\n",  # a 0x token, wider than a byte
        "aa " * 30 + "ab" * 40 + "zz 12\n",  # not hex, found past the first piece
        "0xaa, " * 30 + "ab" * 30 + "|ab zz\n" + "ab\n",  # an ASCII column after a long token
        "12 " * 40 + "\n" + "# a long comment " * 10 + "\n" + "34" * 50 + "\n",
        "ab" * 100 + "\n" + "*\n",
    ],
    ids=["odd", "0x-wide", "not-hex", "bar", "comment", "squeezed"],
)
def test_a_long_line_of_byte_tokens_reads_as_if_read_whole(text: str) -> None:
    # The default max_line holds every line whole; 24 characters cut these into pieces.
    assert outcome(text, max_line=24) == outcome(text)
    assert outcome(text, [5] * len(text), max_line=24) == outcome(text)


def test_a_long_line_that_is_not_byte_tokens_is_refused_naming_it() -> None:
    text = "00000000: aa55\n00000002: " + "12 " * 20 + "\n"
    assert outcome(text, max_line=32) == (
        2,
        "longer than 32 characters, the most a line may hold unless it holds only byte tokens",
    )
    assert outcome(text) == b"\xaa\x55" + b"\x12" * 20


def test_a_logic_analyser_row_may_go_on_over_lines_in_quotes() -> None:
    # As the csv module reads it: a quoted field holds line breaks (blank lines dropped).
    text = LOGIC2_CSV.replace(
        '"Async Serial","data",0.0001868', '"Async\n\nSerial","data",0.0001868'
    )
    error = error_of(text)
    assert error.line == 5  # the second row, on lines 3 to 5, is of another analyser
    assert "export one analyser's table" in error.problem
    text = 'name,data\n"A\nB",0xAA\n"A\nB",0x55\n'
    assert parse(text) == b"\xaa\x55"
    assert outcome(text, [1] * len(text)) == b"\xaa\x55"


def test_a_quote_never_closed_takes_the_rest_of_a_logic_analyser_export() -> None:
    text = 'name,data\n"A,0xAA\nB,0x55\nC,0x12\n'
    assert str(error_of(text)) == "line 4: the row has no 'data' column"
    rows = "".join(f"C,0x{n % 256:02x}\n" for n in range(100))
    assert outcome('name,data\n"A,0xAA\n' + rows, max_line=256) == (
        44,  # where the row outgrew 256 characters
        "a CSV row longer than 256 characters (a '\"' not closed?)",
    )


# ---- sniffing ----


@given(st.one_of(st.binary(), _TEXTISH.map(str.encode)))
def test_looks_like_hex_text_never_raises(head: bytes) -> None:
    assert looks_like_hex_text(head) in (True, False)


def test_binary_dumps_do_not_look_like_hex_text() -> None:
    assert not looks_like_hex_text(b"")
    assert not looks_like_hex_text(README_DUMP)
    assert not looks_like_hex_text(FRAMES * 100)
    rng = random.Random(20240611)
    for size in (1, 7, 64, 4096):
        assert not looks_like_hex_text(rng.randbytes(size) + FRAMES)
    assert not looks_like_hex_text(rng.randbytes(4096))


@given(st.binary(max_size=300), st.integers(0x00, 0x08), st.binary(max_size=300))
def test_bytes_with_control_characters_do_not_look_like_hex_text(
    before: bytes, control: int, after: bytes
) -> None:
    assert not looks_like_hex_text(before + bytes([control]) + after)


@pytest.mark.parametrize(
    "head",
    [
        b"The quick brown fox jumps over the lazy dog.\nAA 55 12\n",
        b"name,age\nBob,42\n",
        b"Time [s],Value\n0.1,170\n",
        b"deadbeef cafe 1\n",
        b"   \n\n",
        b"# only a comment\n",
    ],
)
def test_text_that_is_not_hex_does_not_look_like_hex_text(head: bytes) -> None:
    assert not looks_like_hex_text(head)


def test_a_head_cut_in_a_utf8_character_still_looks_like_hex_text() -> None:
    head = "# capture, température 21 °C\nAA 55 12 05\n# °".encode()
    assert looks_like_hex_text(head[:-1])


def test_a_dump_with_a_typo_further_on_still_looks_like_hex_text() -> None:
    # The caller then parses it and reports the typo, rather than decode text as binary.
    head = b"AA 55 12 05\nAA 5Z\n"
    assert looks_like_hex_text(head)
    assert error_of(head.decode()).line == 2


# ---- round trips through formatters and the real tools ----


def spaced(data: bytes) -> str:
    return "".join(data[i : i + 16].hex(" ").upper() + "\n" for i in range(0, len(data), 16))


def continuous(data: bytes) -> str:
    return "".join(data[i : i + 30].hex() + "\n" for i in range(0, len(data), 30))


def c_array(data: bytes) -> str:
    rows = (
        "  " + ", ".join(f"0x{b:02x}" for b in data[i : i + 12]) + ",\n"
        for i in range(0, len(data), 12)
    )
    return "const uint8_t capture[] = {\n" + "".join(rows) + "};\n"


def ascii_column(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)


def hexdump_c(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        row = data[offset : offset + 16]
        hex_part = row[:8].hex(" ") + ("  " + row[8:].hex(" ") if len(row) > 8 else "")
        lines.append(f"{offset:08x}  {hex_part:<48}  |{ascii_column(row)}|\n")
    return "".join(lines) + (f"{len(data):08x}\n" if data else "")


def xxd(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        row = data[offset : offset + 16]
        groups = " ".join(row[i : i + 2].hex() for i in range(0, len(row), 2))
        lines.append(f"{offset:08x}: {groups:<39}  {ascii_column(row)}\n")
    return "".join(lines)


def od(data: bytes) -> str:
    lines = [
        f"{offset:06x} {data[offset : offset + 16].hex(' ')}\n"
        for offset in range(0, len(data), 16)
    ]
    return "".join(lines) + (f"{len(data):06x}\n" if data else "")


def colon_offsets(data: bytes) -> str:
    return "".join(
        f"0x{offset:04X}: {data[offset : offset + 8].hex(' ').upper()}\n"
        for offset in range(0, len(data), 8)
    )


FORMATTERS: dict[str, Callable[[bytes], str]] = {
    "spaced": spaced,
    "continuous": continuous,
    "c-array": c_array,
    "hexdump-C": hexdump_c,
    "xxd": xxd,
    "od": od,
    "colon-offsets": colon_offsets,
}


@pytest.mark.parametrize("formatter", FORMATTERS.values(), ids=FORMATTERS.keys())
def test_the_formatters_write_the_fixtures(formatter: Callable[[bytes], str]) -> None:
    assert parse(formatter(FRAMES)) == FRAMES


def test_the_formatters_match_the_real_tools() -> None:
    assert hexdump_c(FRAMES) == HEXDUMP_C == _run([_tool("hexdump"), "-C"], FRAMES)
    assert xxd(FRAMES) == XXD == _run([_tool("xxd")], FRAMES)
    assert od(FRAMES) == OD == _run([_tool("od"), "-A", "x", "-t", "x1"], FRAMES)


@settings(max_examples=200)
@given(st.binary(max_size=600))
def test_every_formatted_layout_reads_back(data: bytes) -> None:
    for name, formatter in FORMATTERS.items():
        text = formatter(data)
        assert parse(text) == data, name
        if data:
            assert looks_like_hex_text(text.encode()[:4096]), name


REAL_TOOLS = [
    ["xxd"],
    ["xxd", "-g1"],
    ["xxd", "-g4", "-c", "7"],
    ["xxd", "-i"],
    ["xxd", "-p"],
    ["xxd", "-p", "-c0"],  # one line, however long
    ["hexdump", "-Cv"],
    ["od", "-A", "x", "-t", "x1", "-v"],
    ["od", "-A", "x", "-t", "x1z", "-v"],
]


def _tool(name: str) -> str:
    """The path of a dumper: these ship with Debian, so a missing one fails the test."""
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed"
    return path


def _run(command: list[str], data: bytes) -> str:
    return subprocess.run(command, input=data, capture_output=True, check=True).stdout.decode()


# At least one byte: `od` prints a lone offset, 000000, for empty input, which reads as
# three zero bytes (see docs/hex-input.md); the formatter test above covers b"".
@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_the_real_dumpers_output_reads_back(data: bytes) -> None:
    for command in REAL_TOOLS:
        text = _run([_tool(command[0]), *command[1:]], data)
        assert parse(text) == data, command
        assert looks_like_hex_text(text.encode()[:4096]), command
