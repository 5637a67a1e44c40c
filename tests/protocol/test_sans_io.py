"""protocol/ is Sans-I/O: it imports no event loop, socket, serial or network library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import protocol

FORBIDDEN = {"asyncio", "serial", "serial_asyncio", "socket", "websockets", "paho", "aiomqtt"}
PACKAGE = Path(protocol.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_protocol_module_imports_io() -> None:
    sources = sorted(PACKAGE.glob("**/*.py"))
    assert len(sources) > 5
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(imported_modules(path) & FORBIDDEN)
        for path in sources
        if imported_modules(path) & FORBIDDEN
    }
    assert offenders == {}


def test_importing_protocol_loads_no_event_loop_or_network_library() -> None:
    # socket itself is left out here: pydantic imports it for its own validators.
    check = (
        "import sys, protocol; "
        "print(sorted(m for m in ('asyncio', 'serial', 'websockets', 'paho', 'aiomqtt') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
