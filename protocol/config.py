"""Loading profiles and catalogs from TOML files, with errors an operator can act on.

``load_profile("default")`` finds a shipped profile by name; ``load_profile("x.toml")``
reads a file. Every problem raises :class:`protocol.errors.ConfigError`, whose message
names the file, the key path and what was expected.
"""

from __future__ import annotations

import os
import tomllib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from protocol.catalog import MessageCatalog
from protocol.errors import ConfigError, os_error_reason
from protocol.model import ConfigDocument, InvalidKeyError
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


def is_file_reference(reference: str | Path) -> bool:
    """True when ``reference`` names a file: a ``Path``, or text ending in .toml or with a '/'.

    Anything else is the name of a shipped profile or catalog, so that a file called
    ``default`` in the working directory never shadows the shipped default.
    """
    text = str(reference)
    return isinstance(reference, Path) or text.endswith(".toml") or os.sep in text or "/" in text


def _read_toml(reference: str | Path, kind: str) -> tuple[str, dict[str, Any]]:
    """Return (source name, parsed TOML) for a file path or a shipped name."""
    if is_file_reference(reference):
        source = str(reference)
        try:
            text = Path(reference).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, "", f"cannot read: {os_error_reason(exc)}") from exc
    else:
        shipped = shipped_names(kind)
        if reference not in shipped:
            raise ConfigError(
                reference,
                "",
                f"not a shipped {kind[:-1]} (shipped: {', '.join(shipped)}); "
                f"a file must be named with a path ending in .toml or containing '/'",
            )
        resource = resources.files("telemetry_configs") / kind / f"{reference}.toml"
        source, text = f"configs/{kind}/{reference}.toml", resource.read_text(encoding="utf-8")
    try:
        return source, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from exc


def _key_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds: ``Model``, ``tuple[Model, ...]``, ``A | B``."""
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        candidate = stack.pop(0)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            found.append(candidate)
        else:
            stack.extend(typing.get_args(candidate))
    return found


def _tag(model: type[BaseModel]) -> object:
    """The value of a tagged union member's ``type`` key (None when it has none)."""
    field = model.model_fields.get("type")
    return None if field is None else field.default


def _walk(
    model: type[BaseModel], location: tuple[int | str, ...]
) -> tuple[tuple[int | str, ...], type[BaseModel] | None]:
    """Follow pydantic's ``location`` through the models.

    Return the key path as the file spells it (pydantic adds the tag of a tagged union,
    ``sources[0].serial.path``, which the file does not have) and the model at its end
    (None when it is not a model, or not known).
    """
    shown: list[int | str] = []
    candidates = [model]
    for part in location:
        if isinstance(part, int):
            shown.append(part)
            continue
        tagged = [each for each in candidates if len(candidates) > 1 and _tag(each) == part]
        if tagged:
            candidates = tagged
            continue
        shown.append(part)
        current = candidates[0] if len(candidates) == 1 else None
        field = current.model_fields.get(part) if current is not None else None
        candidates = _models_in(field.annotation) if field is not None else []
    return tuple(shown), candidates[0] if len(candidates) == 1 else None


def validate(model: type[Document], data: dict[str, Any], source: str) -> Document:
    """Validate ``data`` as ``model``; raise ``ConfigError`` naming the first bad key.

    An unknown key is reported before anything else: it is most often a typo that
    also makes a required key look missing.
    """
    try:
        document = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        location, _ = _walk(model, tuple(part for part in error["loc"] if part != "[key]"))
        cause = error.get("ctx", {}).get("error")
        message = str(cause) if cause is not None else error["msg"]
        message = message[:1].lower() + message[1:]
        if isinstance(cause, InvalidKeyError):
            location += cause.key
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            key = error.get("ctx", {}).get("discriminator", "type").strip("'")
            expected = error.get("ctx", {}).get("expected_tags", "")
            location += (key,)
            message = f"expected one of {expected}" if expected else "required"
        elif error["type"] == "extra_forbidden":
            _, parent = _walk(model, tuple(error["loc"][:-1]))
            allowed = list(parent.model_fields) if parent is not None else []
            message = "unknown key" + (f", expected one of {', '.join(allowed)}" if allowed else "")
        elif error["type"] not in ("missing", "value_error") and "input" in error:
            message += f", got {error['input']!r}"
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
