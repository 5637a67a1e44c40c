"""Nothing below imports from above: protocol < fwsim < gateway, and the rooms of gateway.

Imports are read with ``ast`` from every module of the three packages, those inside
functions included, so a late ``import`` cannot hide a dependency.
"""

from __future__ import annotations

import ast
import itertools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

import fwsim
import gateway
import protocol

REPOSITORY = Path(__file__).parents[1]
PACKAGES = {
    "protocol": Path(protocol.__file__).parent,
    "fwsim": Path(fwsim.__file__).parent,
    "gateway": Path(gateway.__file__).parent,
}

ROOMS = (
    "gateway.runtime",
    "gateway.outputs",
    "gateway.commands",
    "gateway.ci",
    "gateway.cli",
    "gateway.launcher",
)
SHARED_COMMAND_MODULES = (
    "gateway.commands.options",
    "gateway.commands.progress",
    "gateway.commands.serving",
)

KNOWN_VIOLATIONS: set[tuple[str, str]] = set()
"""(importer, imported) pairs tolerated for now. Each is a debt: a test fails when one is
no longer needed, so that it is deleted here."""


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    where: str
    """``path:line`` of the import statement."""

    def __str__(self) -> str:
        return f"{self.importer} imports {self.imported} ({self.where})"


def module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {
        module_name(package, root, path): path
        for package, root in PACKAGES.items()
        for path in sorted(root.glob("**/*.py"))
    }


MODULES = all_modules()


def imports_of(module: str, path: Path) -> list[Import]:
    """Every import in ``path``, at any depth, as the module it names.

    ``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``; relative
    imports are resolved against ``module``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        where = f"{os.path.relpath(path, REPOSITORY)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append(Import(module, candidate if candidate in MODULES else base, where))
    return found


ALL_IMPORTS = [item for module, path in MODULES.items() for item in imports_of(module, path)]


def within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def violations(importers: Callable[[str], bool], forbidden: Iterable[str]) -> list[str]:
    """Imports from modules ``importers`` accepts of modules in ``forbidden``, as sentences."""
    return [
        str(item)
        for item in ALL_IMPORTS
        if importers(item.importer)
        and within(item.imported, forbidden)
        and (item.importer, item.imported) not in KNOWN_VIOLATIONS
    ]


def inside(*prefixes: str) -> Callable[[str], bool]:
    return lambda name: within(name, prefixes)


def top_level_shared(name: str) -> bool:
    """The package itself and its modules outside the rooms: config, logs, dumps, ..."""
    return name == "gateway" or (
        name.startswith("gateway.") and name.count(".") == 1 and not within(name, ROOMS)
    )


RULES: dict[str, tuple[Callable[[str], bool], tuple[str, ...]]] = {
    "protocol stands alone": (inside("protocol"), ("gateway", "fwsim")),
    "the simulator stands on protocol alone": (inside("fwsim"), ("gateway",)),
    "the runtime knows no output, command, CI tool or CLI": (
        inside("gateway.runtime"),
        ("gateway.outputs", "gateway.commands", "gateway.ci", "gateway.cli"),
    ),
    "outputs know no command, CI tool or CLI": (
        inside("gateway.outputs"),
        ("gateway.commands", "gateway.ci", "gateway.cli"),
    ),
    "CI tools know no runtime, output, command or CLI": (
        inside("gateway.ci"),
        ("gateway.runtime", "gateway.outputs", "gateway.commands", "gateway.cli"),
    ),
    "the top-level shared modules know no room": (top_level_shared, ROOMS),
    "the packages import no test and no operator script": (
        inside("protocol", "fwsim", "gateway"),
        ("tests", "scripts"),
    ),
    "nothing but the launcher imports the command line": (
        lambda name: name != "gateway.launcher",
        ("gateway.cli", "gateway.launcher"),
    ),
}


@pytest.mark.parametrize("rule", RULES)
def test_nothing_below_imports_from_above(rule: str) -> None:
    importers, forbidden = RULES[rule]
    found = violations(importers, forbidden)
    assert not found, f"{rule}, but:\n" + "\n".join(found)


def test_the_rules_see_every_room_and_shared_module() -> None:
    assert {name for name in MODULES if top_level_shared(name)} >= {
        "gateway",
        "gateway.config",
        "gateway.dumps",
        "gateway.logs",
    }
    for room in ROOMS:
        assert any(within(name, [room]) for name in MODULES), room


def test_commands_depend_on_shared_modules_not_on_each_other() -> None:
    commands = [
        name
        for name in MODULES
        if within(name, ["gateway.commands"])
        and name != "gateway.commands"
        and name not in SHARED_COMMAND_MODULES
    ]
    assert len(commands) >= 5
    found = [
        str(item) for item in ALL_IMPORTS if item.importer in commands and item.imported in commands
    ]
    assert not found, "a command imports another:\n" + "\n".join(found)


def package_graph() -> dict[str, dict[str, Import]]:
    """package -> {package it imports: one import that shows it}."""
    graph: dict[str, dict[str, Import]] = {package: {} for package in PACKAGES}
    for item in ALL_IMPORTS:
        source, target = item.importer.split(".")[0], item.imported.split(".")[0]
        allowed = (item.importer, item.imported) in KNOWN_VIOLATIONS
        if target in PACKAGES and target != source and not allowed:
            graph[source].setdefault(target, item)
    return graph


def find_cycle(graph: dict[str, dict[str, Import]]) -> list[Import]:
    """One cycle of ``graph`` as the imports along it, or [] if there is none."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[Import]:
        if node in visiting:
            cycle = [*visiting[visiting.index(node) :], node]
            return [graph[a][b] for a, b in itertools.pairwise(cycle)]
        if node in done:
            return []
        visiting.append(node)
        for target in graph[node]:
            if found := visit(target):
                return found
        visiting.pop()
        done.add(node)
        return []

    for node in graph:
        if found := visit(node):
            return found
    return []


def test_no_cycle_between_packages() -> None:
    cycle = [str(item) for item in find_cycle(package_graph())]
    assert not cycle, "packages import each other in a cycle:\n" + "\n".join(cycle)


def test_every_tolerated_violation_is_still_needed() -> None:
    present = {(item.importer, item.imported) for item in ALL_IMPORTS}
    stale = sorted(KNOWN_VIOLATIONS - present)
    assert stale == [], "no longer imported: delete these from KNOWN_VIOLATIONS"


# The checker itself.


def test_the_reader_finds_imports_inside_functions_and_resolves_relative_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dumps.py"
    path.write_text(
        "def late():\n"
        "    from gateway.outputs import mqtt\n"
        "    import gateway.cli\n"
        "from .runtime import journal\n"
        "from . import config\n",
        encoding="utf-8",
    )
    found = {item.imported for item in imports_of("gateway.dumps", path)}
    assert found == {
        "gateway.outputs.mqtt",
        "gateway.cli",
        "gateway.runtime.journal",
        "gateway.config",
    }


def test_a_cycle_is_reported_import_by_import() -> None:
    def edge(a: str, b: str) -> Import:
        return Import(f"{a}.x", f"{b}.y", f"{a}/x.py:1")

    graph = {
        "protocol": {"fwsim": edge("protocol", "fwsim")},
        "fwsim": {"gateway": edge("fwsim", "gateway")},
        "gateway": {"protocol": edge("gateway", "protocol")},
    }
    assert [str(item) for item in find_cycle(graph)] == [
        "protocol.x imports fwsim.y (protocol/x.py:1)",
        "fwsim.x imports gateway.y (fwsim/x.py:1)",
        "gateway.x imports protocol.y (gateway/x.py:1)",
    ]
    del graph["gateway"]["protocol"]
    assert find_cycle(graph) == []
