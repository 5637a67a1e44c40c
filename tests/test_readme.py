"""The README's quick start works when followed to the letter, and prints what it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gateway.config import load_config

README = Path(__file__).parent.parent / "README.md"


def section(title: str) -> str:
    return README.read_text(encoding="utf-8").split(f"## {title}", 1)[1].split("\n## ")[0]


def decoding_blocks() -> tuple[list[str], list[str]]:
    text = section("Decoding a dump")
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL)
    commands = next(body for lang, body in blocks if lang == "sh").strip().splitlines()
    output = next(body for lang, body in blocks if lang == "").strip().splitlines()
    return commands, output


def test_quick_start_installs_then_runs_the_demo() -> None:
    [install_and_demo] = re.findall(r"```sh\n(.*?)```", section("Quick start"), re.DOTALL)[:1]
    assert "pip install -e '.[test]'" in install_and_demo
    assert install_and_demo.strip().endswith("&& tgw demo")  # test_gateway.py runs the demo
    assert "python -m pytest" in section("Quick start")


def test_decoding_commands_print_the_documented_output(tmp_path: Path) -> None:
    rest, documented = decoding_blocks()
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


def test_example_gateway_configs_are_valid() -> None:
    examples = sorted((README.parent / "configs" / "gateway").glob("*.toml"))
    assert len(examples) >= 2
    for example in examples:
        assert f"configs/gateway/{example.name}" in README.read_text(encoding="utf-8")
        load_config(example)
