"""Loading profiles and catalogs from TOML files, with errors an operator can act on.

``load_profile("default")`` finds a shipped profile by name; ``load_profile("x.toml")``
reads a file. Every problem raises :class:`protocol.errors.ConfigError`, whose message
names the file, the key path and what was expected.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from protocol.catalog import MessageCatalog
from protocol.errors import ConfigError
from protocol.model import ConfigDocument
from protocol.profile import FrameProfile

__all__ = [
    "DEFAULT_CATALOG",
    "DEFAULT_PROFILE",
    "load_catalog",
    "load_profile",
    "shipped_names",
]

DEFAULT_PROFILE = "default"
DEFAULT_CATALOG = "default"

Document = TypeVar("Document", bound=ConfigDocument)


def shipped_names(kind: str) -> list[str]:
    """Names of the shipped ``profiles`` or ``catalogs`` (the files in ``configs/<kind>/``)."""
    folder = resources.files("telemetry_configs") / kind
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def _read_toml(reference: str | Path, kind: str) -> tuple[str, dict[str, Any]]:
    """Return (source name, parsed TOML) for a file path or a shipped name."""
    path = Path(reference)
    if path.suffix != ".toml" and not path.exists():
        if str(reference) not in shipped_names(kind):
            raise ConfigError(
                reference,
                "",
                f"no such file, and not a shipped {kind[:-1]} "
                f"(shipped: {', '.join(shipped_names(kind))})",
            )
        resource = resources.files("telemetry_configs") / kind / f"{reference}.toml"
        source, text = f"configs/{kind}/{reference}.toml", resource.read_text(encoding="utf-8")
    else:
        source = str(reference)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(source, "", f"cannot read: {reason.lower()}") from exc
    try:
        return source, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from exc


def _key_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def validate(model: type[Document], data: dict[str, Any], source: str) -> Document:
    """Validate ``data`` as ``model``; raise ``ConfigError`` naming the first bad key."""
    try:
        document = model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        message = error["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if error["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        elif error["type"] not in ("missing", "value_error") and "input" in error:
            message += f", got {error['input']!r}"
        location = tuple(part for part in error["loc"] if part != "[key]")
        raise ConfigError(source, _key_path(location) or "(top level)", message) from exc
    document.with_source(source)
    return document


def load_profile(reference: str | Path = DEFAULT_PROFILE) -> FrameProfile:
    """Load a frame profile from a TOML file path or a shipped name such as ``"default"``."""
    source, data = _read_toml(reference, "profiles")
    return validate(FrameProfile, data, source)


def load_catalog(reference: str | Path = DEFAULT_CATALOG) -> MessageCatalog:
    """Load a message catalog from a TOML file path or a shipped name such as ``"default"``."""
    source, data = _read_toml(reference, "catalogs")
    return validate(MessageCatalog, data, source)
