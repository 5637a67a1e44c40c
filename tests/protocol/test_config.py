"""Loading profiles and catalogs: the shipped ones work, broken ones say where and why.

Every broken file must raise :class:`ConfigError` (never a pydantic, TOML or OS
error), in one line that names the file, the exact key path and what was expected.
Each case below starts from a valid base text and changes one thing, so it fails
for that one reason only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import pytest

from protocol.catalog import FieldSpec, FieldType, MessageCatalog
from protocol.checksums import CHECKSUMS
from protocol.config import load_catalog, load_profile, shipped_names
from protocol.errors import ConfigError, GatewayError
from protocol.profile import ChecksumSpan, FrameProfile, HeaderRole
from protocol.schema import compile_schema

PROFILES = shipped_names("profiles")
CATALOGS = shipped_names("catalogs")

BASE_PROFILE = """\
name = "test"
sync = "AA 55"
max_payload = 64
header = [
  { role = "cmd", width = 1 },
  { role = "length", width = 2 },
]

[checksum]
algorithm = "sum8"
"""

BASE_CATALOG = """\
name = "test"

[[messages]]
cmd = 1
name = "first"
fields = [
  { name = "a", type = "u8" },
  { name = "b", type = "u16" },
]

[[messages]]
cmd = 2
name = "second"
"""

# The second field of the first message, where most catalog cases make their change.
FIELD_B = '{ name = "b", type = "u16" }'


def edit(text: str, old: str, new: str) -> str:
    """Replace the one occurrence of ``old`` in ``text`` (so a typo here cannot go unnoticed)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def profile_with(old: str, new: str) -> str:
    return edit(BASE_PROFILE, old, new)


def field_b(new: str) -> str:
    return edit(BASE_CATALOG, FIELD_B, new)


Kind = Literal["profile", "catalog", "combined"]


class Case(NamedTuple):
    kind: Kind
    """``profile`` or ``catalog``: the file fails to load; ``combined``: the catalog loads
    but does not compile with the base profile."""
    text: str
    key_path: str
    """The exact key path the error must name ("" when no key applies)."""
    expected: str | tuple[str, ...]
    """What the error must say (a fragment of its message), or fragments it must all hold
    in any order: for a choice, the value given and every allowed one, so that a new
    checksum or role does not break the case."""


BITS_WITH_DUPLICATE_ENUM_NAMES = (
    '{ name = "b", type = "u8", bits = [{ name = "m", width = 2, enum = { 0 = "a", 1 = "a" } }] }'
)

CASES: list[tuple[str, Case]] = [
    (
        "toml-syntax",
        Case("profile", BASE_PROFILE + "max_payload = \n", "", "not valid TOML"),
    ),
    (
        "toml-syntax-catalog",
        Case("catalog", edit(BASE_CATALOG, "cmd = 2", "cmd = 2 3"), "", "not valid TOML"),
    ),
    (
        "missing-name",
        Case("profile", profile_with('name = "test"\n', ""), "name", "required"),
    ),
    (
        "missing-checksum",
        Case("profile", BASE_PROFILE.partition("[checksum]")[0], "checksum", "required"),
    ),
    (
        "missing-algorithm",
        Case("profile", profile_with('algorithm = "sum8"', ""), "checksum.algorithm", "required"),
    ),
    (
        "missing-field-type",
        Case("catalog", field_b('{ name = "b" }'), "messages[0].fields[1].type", "required"),
    ),
    (
        "missing-cmd",
        Case("catalog", edit(BASE_CATALOG, "cmd = 2\n", ""), "messages[1].cmd", "required"),
    ),
    (
        "unknown-key",
        Case("profile", profile_with("max_payload", "max_paylod"), "max_paylod", "unknown key"),
    ),
    (
        "unknown-key-in-header",
        Case(
            "profile",
            profile_with('role = "length", width', 'role = "length", widht'),
            "header[1].widht",
            "unknown key",
        ),
    ),
    (
        "unknown-key-in-checksum",
        Case("profile", BASE_PROFILE + 'spam = "x"\n', "checksum.spam", "unknown key"),
    ),
    (
        "unknown-key-in-field",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u16", scael = 2 }'),
            "messages[0].fields[1].scael",
            ("unknown key, expected one of", *FieldSpec.model_fields),
        ),
    ),
    (
        "sync-not-hex",
        Case("profile", profile_with('"AA 55"', '"ZZ"'), "sync", "hex string"),
    ),
    (
        "sync-not-a-string",
        Case("profile", profile_with('"AA 55"', "170"), "sync", "hex string"),
    ),
    (
        "sync-empty",
        Case("profile", profile_with('"AA 55"', '""'), "sync", "expected 1 to 4 sync bytes, got 0"),
    ),
    (
        "sync-5-bytes",
        Case(
            "profile",
            profile_with('"AA 55"', '"AA 55 AA 55 AA"'),
            "sync",
            "expected 1 to 4 sync bytes, got 5",
        ),
    ),
    (
        "header-without-cmd",
        Case(
            "profile",
            profile_with('  { role = "cmd", width = 1 },\n', ""),
            "header",
            "exactly one field with role 'cmd', got 0",
        ),
    ),
    (
        "two-length-fields",
        Case(
            "profile",
            profile_with('{ role = "cmd", width = 1 }', '{ role = "cmd" }, { role = "length" }'),
            "header",
            "exactly one field with role 'length', got 2",
        ),
    ),
    (
        "unknown-role",
        Case(
            "profile",
            profile_with('role = "cmd"', 'role = "command"'),
            "header[0].role",
            ("'command'", *(f"'{role.value}'" for role in HeaderRole)),
        ),
    ),
    (
        "header-field-with-neither-role-nor-name",
        Case(
            "profile",
            profile_with('{ role = "cmd", width = 1 }', '{ role = "cmd" }, { width = 1 }'),
            "header[1]",
            "expected a role or a name, got neither",
        ),
    ),
    (
        "header-field-with-role-and-name",
        Case(
            "profile",
            profile_with('{ role = "cmd", width = 1 }', '{ role = "cmd", name = "c" }'),
            "header[0]",
            "expected a role or a name, got both ('cmd', 'c')",
        ),
    ),
    (
        "header-name-is-a-role",
        Case(
            "profile",
            profile_with('{ role = "cmd", width = 1 }', '{ role = "cmd" }, { name = "sequence" }'),
            "header[1].name",
            "'sequence' is a role: write role = 'sequence'",
        ),
    ),
    (
        "header-name-is-a-record-key",
        Case(
            "profile",
            profile_with('{ role = "cmd", width = 1 }', '{ role = "cmd" }, { name = "time" }'),
            "header[1].name",
            "'time' is a key of the records and envelopes themselves",
        ),
    ),
    (
        "header-name-not-an-identifier",
        Case(
            "profile",
            profile_with('{ role = "cmd", width = 1 }', '{ role = "cmd" }, { name = "a-b" }'),
            "header[1].name",
            "letters, digits and '_'",
        ),
    ),
    (
        "header-names-twice",
        Case(
            "profile",
            profile_with(
                '{ role = "cmd", width = 1 }', '{ role = "cmd" }, { name = "x" }, { name = "x" }'
            ),
            "header[2].name",
            "names must be unique, 'x' is taken",
        ),
    ),
    (
        "width-3",
        Case("profile", profile_with("width = 2", "width = 3"), "header[1].width", "1, 2 or 4"),
    ),
    (
        "bad-byte-order",
        Case(
            "profile",
            profile_with("width = 2 }", 'width = 2, byte_order = "middle" }'),
            "header[1].byte_order",
            "'little' or 'big'",
        ),
    ),
    (
        "unknown-checksum-algorithm",
        Case(
            "profile",
            profile_with('"sum8"', '"md5"'),
            "checksum.algorithm",
            ("'md5'", *CHECKSUMS),
        ),
    ),
    (
        "unknown-checksum-span",
        Case(
            "profile",
            BASE_PROFILE + 'span = "payload"\n',
            "checksum.span",
            ("'payload'", *(f"'{span.value}'" for span in ChecksumSpan)),
        ),
    ),
    (
        "max-payload-over-2-byte-length",
        Case(
            "profile",
            profile_with("max_payload = 64", "max_payload = 65536"),
            "max_payload",
            "65536 does not fit the 2-byte length field",
        ),
    ),
    (
        "max-payload-over-1-byte-length",
        Case(
            "profile",
            edit(profile_with("max_payload = 64", "max_payload = 256"), "width = 2", "width = 1"),
            "max_payload",
            "256 does not fit the 1-byte length field",
        ),
    ),
    (
        "negative-max-payload",
        Case(
            "profile",
            profile_with("max_payload = 64", "max_payload = -1"),
            "max_payload",
            "greater than or equal to 0",
        ),
    ),
    (
        "unknown-field-type",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u24" }'),
            "messages[0].fields[1].type",
            ("'u24'", *(f"'{kind.value}'" for kind in FieldType)),
        ),
    ),
    (
        "bytes-without-length",
        Case(
            "catalog",
            field_b('{ name = "b", type = "bytes" }'),
            "messages[0].fields[1].length",
            "required for type 'bytes'",
        ),
    ),
    (
        "string-without-length",
        Case(
            "catalog",
            field_b('{ name = "b", type = "string" }'),
            "messages[0].fields[1].length",
            "required for type 'string'",
        ),
    ),
    (
        "length-on-an-integer",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u16", length = 2 }'),
            "messages[0].fields[1].length",
            "only for 'bytes' and 'string', not 'u16'",
        ),
    ),
    (
        "length-0",
        Case(
            "catalog",
            field_b('{ name = "b", type = "bytes", length = 0 }'),
            "messages[0].fields[1].length",
            "greater than or equal to 1",
        ),
    ),
    (
        "count-0",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u16", count = 0 }'),
            "messages[0].fields[1].count",
            "greater than or equal to 1",
        ),
    ),
    (
        "enum-on-a-float",
        Case(
            "catalog",
            field_b('{ name = "b", type = "f32", enum = { 1 = "one" } }'),
            "messages[0].fields[1].enum",
            "only for integer types, not 'f32'",
        ),
    ),
    (
        "duplicate-enum-names",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u8", enum = { 1 = "x", 2 = "x" } }'),
            "messages[0].fields[1].enum",
            "names must be unique, 'x' names two values",
        ),
    ),
    (
        "duplicate-enum-names-in-bits",
        Case(
            "catalog",
            field_b(BITS_WITH_DUPLICATE_ENUM_NAMES),
            "messages[0].fields[1].bits[0].enum",
            "names must be unique, 'a' names two values",
        ),
    ),
    (
        "enum-key-not-an-integer",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u16", enum = { one = "x" } }'),
            "messages[0].fields[1].enum.one",
            "valid integer",
        ),
    ),
    (
        "bits-on-a-signed-int",
        Case(
            "catalog",
            field_b('{ name = "b", type = "i16", bits = [{ name = "x" }] }'),
            "messages[0].fields[1].bits",
            "only for unsigned integer types, not 'i16'",
        ),
    ),
    (
        "bits-exceeding-the-width",
        Case(
            "catalog",
            field_b(
                '{ name = "b", type = "u8", '
                'bits = [{ name = "x", width = 5 }, { name = "y", width = 4 }] }'
            ),
            "messages[0].fields[1].bits",
            "9 bits declared, u8 has 8",
        ),
    ),
    (
        "bit-width-0",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u8", bits = [{ name = "x", width = 0 }] }'),
            "messages[0].fields[1].bits[0].width",
            "greater than or equal to 1",
        ),
    ),
    (
        "duplicate-bit-names",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u8", bits = [{ name = "x" }, { name = "x" }] }'),
            "messages[0].fields[1].bits[1].name",
            "unique",
        ),
    ),
    (
        "enum-and-scale",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u16", scale = 2, enum = { 1 = "one" } }'),
            "messages[0].fields[1]",
            "at most one of enum, bits, scale/offset",
        ),
    ),
    (
        "scale-on-a-string",
        Case(
            "catalog",
            field_b('{ name = "b", type = "string", length = 4, scale = 2 }'),
            "messages[0].fields[1].scale",
            "only for numbers, not 'string'",
        ),
    ),
    (
        "scale-0",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u16", scale = 0 }'),
            "messages[0].fields[1].scale",
            "non-zero number, got 0",
        ),
    ),
    (
        "duplicate-field-names",
        Case(
            "catalog",
            field_b('{ name = "a", type = "u16" }'),
            "messages[0].fields[1].name",
            "['a']",
        ),
    ),
    (
        "duplicate-cmd",
        Case("catalog", edit(BASE_CATALOG, "cmd = 2", "cmd = 1"), "messages[1].cmd", "[1]"),
    ),
    (
        "duplicate-message-names",
        Case(
            "catalog",
            edit(BASE_CATALOG, 'name = "second"', 'name = "first"'),
            "messages[1].name",
            "['first']",
        ),
    ),
    (
        "bad-field-name",
        Case(
            "catalog",
            field_b('{ name = "b-c", type = "u16" }'),
            "messages[0].fields[1].name",
            "letters, digits and '_', got 'b-c'",
        ),
    ),
    (
        "bad-message-name",
        Case(
            "catalog",
            edit(BASE_CATALOG, 'name = "second"', 'name = "2nd"'),
            "messages[1].name",
            "letters, digits and '_', got '2nd'",
        ),
    ),
    (
        "bad-bit-name",
        Case(
            "catalog",
            field_b('{ name = "b", type = "u8", bits = [{ name = "x y" }] }'),
            "messages[0].fields[1].bits[0].name",
            "letters, digits and '_', got 'x y'",
        ),
    ),
    (
        "negative-cmd",
        Case(
            "catalog",
            edit(BASE_CATALOG, "cmd = 2", "cmd = -2"),
            "messages[1].cmd",
            "greater than or equal to 0",
        ),
    ),
    (
        "bad-catalog-byte-order",
        Case(
            "catalog",
            'byte_order = "native"\n' + BASE_CATALOG,
            "byte_order",
            "'little' or 'big'",
        ),
    ),
    (
        "cmd-wider-than-the-profile-cmd",
        Case(
            "combined",
            edit(BASE_CATALOG, "cmd = 2", "cmd = 0x100"),
            "messages[1].cmd",
            "256 does not fit the 1-byte cmd field of profile 'test' (",
        ),
    ),
    (
        "message-larger-than-max-payload",
        Case(
            "combined",
            edit(
                BASE_CATALOG,
                'name = "second"',
                'name = "second"\nfields = [{ name = "blob", type = "bytes", length = 65 }]',
            ),
            "messages[1]",
            "'second' has 65 payload bytes, profile 'test' (",
        ),
    ),
]

CASE_PARAMS = [pytest.param(case, id=name) for name, case in CASES]


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def raised_error(tmp_path: Path, case: Case) -> tuple[Path, ConfigError]:
    """Load (and for ``combined``, compile) the case's file; return it and the error."""
    path = write(tmp_path, case.text)

    def load() -> object:
        match case.kind:
            case "profile":
                return load_profile(path)
            case "catalog":
                return load_catalog(path)
            case "combined":
                profile = load_profile(write(tmp_path, BASE_PROFILE, "base-profile.toml"))
                return compile_schema(profile, load_catalog(path))

    with pytest.raises(ConfigError) as caught:
        load()
    return path, caught.value


# Shipped configuration.


def test_there_are_shipped_defaults() -> None:
    assert "default" in PROFILES
    assert "addressed-crc16" in PROFILES
    assert "default" in CATALOGS


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, FrameProfile)
    assert profile.source == f"configs/profiles/{name}.toml"


@pytest.mark.parametrize("name", CATALOGS)
def test_shipped_catalog_loads(name: str) -> None:
    catalog = load_catalog(name)
    assert isinstance(catalog, MessageCatalog)
    assert catalog.source == f"configs/catalogs/{name}.toml"
    assert catalog.messages


@pytest.mark.parametrize("catalog_name", CATALOGS)
@pytest.mark.parametrize("profile_name", PROFILES)
def test_every_shipped_profile_compiles_with_every_shipped_catalog(
    profile_name: str, catalog_name: str
) -> None:
    schema = compile_schema(load_profile(profile_name), load_catalog(catalog_name))
    assert set(schema.names) == {message.name for message in schema.catalog.messages}


def test_the_base_texts_of_the_cases_are_valid(tmp_path: Path) -> None:
    profile = load_profile(write(tmp_path, BASE_PROFILE, "profile.toml"))
    catalog = load_catalog(write(tmp_path, BASE_CATALOG, "catalog.toml"))
    schema = compile_schema(profile, catalog)
    assert set(schema.names) == {"first", "second"}


# Broken configuration.


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_error_names_the_file_and_what_was_expected(tmp_path: Path, case: Case) -> None:
    path, error = raised_error(tmp_path, case)
    text = str(error)
    assert "\n" not in text
    assert error.source == str(path)
    assert text.startswith(f"{path}: ")
    for fragment in (case.expected,) if isinstance(case.expected, str) else case.expected:
        assert fragment in text


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_error_names_the_exact_key_path(tmp_path: Path, case: Case) -> None:
    path, error = raised_error(tmp_path, case)
    assert error.key_path == case.key_path
    prefix = f"{path}: {case.key_path}: " if case.key_path else f"{path}: "
    assert str(error) == prefix + error.problem


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, BASE_PROFILE + "max_payload = \n")
    with pytest.raises(ConfigError, match=r"line 11\b") as caught:
        load_profile(path)
    assert isinstance(caught.value.__cause__, Exception)


def test_errors_are_chained_and_rooted(tmp_path: Path) -> None:
    path = write(tmp_path, profile_with("width = 2", "width = 3"))
    with pytest.raises(GatewayError) as caught:
        load_profile(path)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.__cause__ is not None


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    assert str(caught.value) == f"{path}: cannot read: no such file or directory"
    with pytest.raises(ConfigError, match="no such file"):
        load_catalog(str(path))


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "profiles.toml"
    folder.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_profile(folder)
    assert str(caught.value) == f"{folder}: cannot read: is a directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASE_PROFILE.replace("test", "t\xe9st").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    assert str(caught.value).startswith(f"{path}: cannot read: ")
    assert "utf-8" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "load"),
    [("profile", load_profile), ("catalog", load_catalog)],
    ids=["profile", "catalog"],
)
def test_name_that_is_neither_a_file_nor_shipped(
    kind: str, load: Callable[[str], object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load("no-such-name")
    shipped = ", ".join(PROFILES if kind == "profile" else CATALOGS)
    assert str(caught.value) == (
        f"no-such-name: not a shipped {kind} (shipped: {shipped}); "
        "a file must be named with a path ending in .toml or containing '/'"
    )


def test_path_without_suffix_is_a_file_and_a_bare_name_is_shipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "mine").write_text(BASE_PROFILE, encoding="utf-8")
    assert load_profile(str(tmp_path / "mine")).name == "test"
    monkeypatch.chdir(tmp_path)
    assert load_profile("./mine").name == "test"
    with pytest.raises(ConfigError, match="not a shipped profile"):
        load_profile("mine")
    with pytest.raises(ConfigError) as caught:
        load_profile(str(tmp_path / "absent"))
    assert str(caught.value) == f"{tmp_path / 'absent'}: cannot read: no such file or directory"


def test_default_profile_is_not_shadowed_by_a_local_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    (tmp_path / "addressed-crc16").write_text("not toml", encoding="utf-8")
    assert load_profile().source == "configs/profiles/default.toml"
    assert load_profile("addressed-crc16").source == "configs/profiles/addressed-crc16.toml"
