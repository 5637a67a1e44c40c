"""The ``tgw`` entry point: help without a command, --version, every option explained."""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from fwsim.cli import build_parser as fwsim_parser
from gateway.cli import build_parser as tgw_parser
from tests.fwsim.helpers import TGW, run

COMMANDS = ("decode", "capture", "run", "demo", "replay", "check")


def test_tgw_alone_prints_its_help_and_exits_0() -> None:
    result = run("tgw")
    assert result.stdout == run("tgw", "--help").stdout
    assert result.stdout.startswith("usage: tgw")
    for command in COMMANDS:
        assert f"    {command} " in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("program", ["tgw", "fwsim"])
def test_version_is_the_distribution_s(program: str) -> None:
    result = run(program, "--version")
    assert result.stdout == f"{program} {version('telemetry-gateway')}\n"


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser: fwsim, tgw and each tgw command."""
    tgw = tgw_parser()
    [commands] = [a for a in tgw._actions if isinstance(a, argparse._SubParsersAction)]
    return {"fwsim": fwsim_parser(), "tgw": tgw} | {
        f"tgw {name}": parser for name, parser in commands.choices.items()
    }


def test_every_command_is_registered() -> None:
    assert set(parsers()) == {"fwsim", "tgw", *(f"tgw {name}" for name in COMMANDS)}


@pytest.mark.parametrize("name", sorted(parsers()))
def test_every_option_and_argument_says_what_it_is_for(name: str) -> None:
    parser = parsers()[name]
    assert parser.description, name
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        words = (action.help or "").split()
        assert len(words) >= 3, (name, action.option_strings or action.dest, action.help)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_s_help_prints(command: str) -> None:
    result = run("tgw", command, "--help")
    assert result.stdout.startswith(f"usage: tgw {command}")


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.6])
def test_ctrl_c_at_any_moment_of_the_start_is_quiet(tmp_path: Path, delay: float) -> None:
    """A Ctrl-C while tgw still loads its modules, or once it runs, is no traceback."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "127.0.0.1"\nport = 9\n'
        "[websocket]\nport = 0\n[http]\nenabled = false\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [str(TGW), "run", "-c", str(config)], stderr=subprocess.PIPE, text=True
    )
    time.sleep(delay)  # any moment will do: the point is that none shows a traceback
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "Traceback" not in stderr
    assert process.returncode in (0, 130, -signal.SIGINT), stderr
