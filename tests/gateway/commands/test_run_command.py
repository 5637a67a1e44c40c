"""``tgw run`` keeps its state on disk by default: where, how to choose, how to opt out,
and what a second gateway on the same directory is told."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from gateway.commands.run import StateDir, choose_state_dir
from gateway.config import GatewayConfig
from protocol.errors import ConfigError
from tests.gateway.broker import free_port
from tests.gateway.test_gateway import GUARD, TGW, wait_healthy

CONFIG = Path("/etc/tgw/field gateway.toml")


def choose(
    environ: dict[str, str],
    *,
    option: str | None = None,
    keep: bool = True,
    state_dir: str | None = None,
) -> StateDir:
    config = GatewayConfig(state_dir=state_dir)
    return choose_state_dir(config, CONFIG, option=option, keep=keep, environ=environ)


XDG = {"XDG_STATE_HOME": "/x/state", "HOME": "/home/op"}
HOME_DEFAULT = "/home/op/.local/state/tgw/field-gateway"


@pytest.mark.parametrize(
    ("environ", "option", "state_dir", "expected"),
    [
        ({**XDG, "STATE_DIRECTORY": "/var/lib/tgw"}, "/opt/s", "/srv/s", "/opt/s"),
        ({**XDG, "STATE_DIRECTORY": "/var/lib/tgw"}, None, "/srv/s", "/srv/s"),
        ({**XDG, "STATE_DIRECTORY": "/var/lib/tgw:/var/lib/other"}, None, None, "/var/lib/tgw"),
        (XDG, None, None, "/x/state/tgw/field-gateway"),
        ({"XDG_STATE_HOME": "relative", "HOME": "/home/op"}, None, None, HOME_DEFAULT),
        ({"HOME": "/home/op"}, None, None, HOME_DEFAULT),
        ({"HOME": "/home/op", "STATE_DIRECTORY": ""}, None, None, HOME_DEFAULT),
    ],
    ids=["option", "config", "systemd", "xdg", "xdg-relative", "home", "systemd-empty"],
)
def test_where_state_is_kept(
    environ: dict[str, str], option: str | None, state_dir: str | None, expected: str
) -> None:
    assert choose(environ, option=option, state_dir=state_dir).path == Path(expected)


def test_no_state_keeps_nothing_and_a_missing_home_is_one_line() -> None:
    assert choose(XDG, option=None, keep=False, state_dir="/srv/s") == StateDir(None, "--no-state")
    with pytest.raises(ConfigError, match=r"state_dir: .*: pass --state-dir DIR, or --no-state"):
        choose({"HOME": "relative"})


def write_config(folder: Path, port: int) -> Path:
    config = folder / "plant.toml"
    config.write_text(
        '[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "127.0.0.1"\n'
        f"port = {free_port()}\n[websocket]\nport = {port}\n",
        encoding="utf-8",
    )
    return config


def test_state_is_kept_by_default_and_a_second_gateway_is_told_to_choose(
    tmp_path: Path, own_state_home: Path
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    state = own_state_home / "tgw" / "plant"
    first = subprocess.Popen(
        [str(TGW), "run", "-c", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        wait_healthy(port)
        assert (state / "journal.sqlite").exists()
        second = subprocess.run(
            [str(TGW), "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=GUARD,
            check=False,
        )
    finally:
        first.send_signal(signal.SIGTERM)
        _, log = first.communicate(timeout=GUARD)
    assert first.returncode == 0
    assert f"state kept in {state} (the default for {config}, under $XDG_STATE_HOME)" in log
    assert second.returncode == 2
    assert second.stderr.splitlines()[-1] == (
        f"tgw: error: {config}: state_dir: {state / 'journal.sqlite'} is in use by another "
        "gateway: give each gateway its own state directory (tgw run --state-dir DIR)"
    )


def test_no_state_says_what_a_restart_loses(tmp_path: Path, own_state_home: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    process = subprocess.Popen(
        [str(TGW), "run", "-c", str(config), "--no-state"], stderr=subprocess.PIPE, text=True
    )
    try:
        wait_healthy(port)
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=GUARD)
    assert process.returncode == 0
    assert "WARNING" in log
    assert "--no-state: nothing is kept on disk: a restart starts seq again at 1" in log
    assert list(own_state_home.iterdir()) == []
