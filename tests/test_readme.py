"""The README's quick start works when followed to the letter, and prints what it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def quick_start_blocks() -> tuple[list[str], list[str]]:
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ")[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.DOTALL)
    commands = next(body for lang, body in blocks if lang == "sh").strip().splitlines()
    output = next(body for lang, body in blocks if lang == "").strip().splitlines()
    return commands, output


def test_quick_start_commands_print_the_documented_output(tmp_path: Path) -> None:
    commands, documented = quick_start_blocks()
    install, *rest = commands
    assert "pip install" in install  # the environment running this test has done it
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(rest)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() + result.stderr.splitlines() == documented
