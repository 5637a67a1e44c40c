"""The gateway's configuration as a new user meets it: errors that point at the key, paths
relative to the file, outputs only where configured, nothing made for a device never seen."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from gateway.config import CaptureConfig, GatewayConfig, TcpSourceConfig, load_config
from gateway.outputs.registry import OUTPUTS
from gateway.runtime.capture import CaptureWriter
from gateway.runtime.gateway import Gateway
from gateway.runtime.metrics import GatewayMetrics
from protocol.capture import CaptureHeader
from protocol.errors import ConfigError
from tests.gateway.test_gateway import TGW

PROFILE = (Path(__file__).parents[2] / "configs" / "profiles" / "default.toml").read_text(
    encoding="utf-8"
)


def tgw_run(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TGW), "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.mark.parametrize("text", ["", "[logging]\nlevel = 'debug'\n"], ids=["empty", "no-sources"])
def test_a_config_without_sources_is_one_line_and_exit_2(tmp_path: Path, text: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text, encoding="utf-8")
    result = tgw_run(config, tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"tgw: error: {config}: sources: no [[sources]]")


@pytest.mark.parametrize("kind", ["serial", "tcp"])
def test_a_typo_in_a_source_names_the_key_as_written(tmp_path: Path, kind: str) -> None:
    config = tmp_path / "gateway.toml"
    where = 'path = "/dev/x"' if kind == "serial" else 'host = "h"\nport = 1'
    config.write_text(
        f'[[sources]]\ntype = "{kind}"\ndevice = "a"\n{where}\nsilence_timout = 3\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert message.startswith(f"{config}: sources[0].silence_timout: unknown key, expected one of ")
    allowed = message.split("expected one of ", 1)[1].split(", ")
    assert "silence_timeout" in allowed
    assert ("path" in allowed) is (kind == "serial")


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    (folder / "profiles").mkdir(parents=True)
    (folder / "profiles" / "mine.toml").write_text(PROFILE, encoding="utf-8")
    config = folder / "gateway.toml"
    config.write_text(
        '[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "h"\nport = 1\n'
        'profile = "profiles/mine.toml"\ncatalog = "default"\n'
        '[capture]\ndirectory = "captures"\n[file]\npath = "/var/tmp/absolute.jsonl"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = Path.cwd()
    os.chdir(elsewhere)
    try:
        loaded = load_config("../site/gateway.toml")
        Gateway(loaded, OUTPUTS)  # the profile is found from here
    finally:
        os.chdir(cwd)
    source = loaded.sources[0]
    assert Path(source.profile) == Path("../site/profiles/mine.toml")
    assert source.catalog == "default"  # a shipped name stays a name
    assert Path(loaded.capture.directory or "") == Path("../site/captures")
    assert loaded.file.path == "/var/tmp/absolute.jsonl"


@pytest.mark.parametrize("part", ["profile", "catalog"])
def test_a_missing_profile_names_the_config_file_and_key(tmp_path: Path, part: str) -> None:
    folder = tmp_path / "site"
    folder.mkdir()
    config = folder / "gateway.toml"
    config.write_text(
        f'[[sources]]\ntype = "tcp"\ndevice = "a"\nhost = "h"\nport = 1\n{part} = "missing.toml"\n',
        encoding="utf-8",
    )
    result = tgw_run(config, tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == (
        f"tgw: error: {config}: sources[0].{part}: {folder / 'missing.toml'}: cannot read: "
        "no such file or directory"
    )


def test_mqtt_is_off_unless_configured() -> None:
    source = TcpSourceConfig(device="a", host="127.0.0.1", port=1)
    without = Gateway(GatewayConfig(sources=(source,)), OUTPUTS)
    assert "mqtt" not in [output.name for output in without.outputs]
    assert b"tgw_mqtt_" not in without.metrics.render()  # no alert on a broker never asked for
    config = GatewayConfig.model_validate(
        {"sources": [source.model_dump()], "mqtt": {"enabled": True}}
    )
    with_mqtt = Gateway(config, OUTPUTS)
    assert "mqtt" in [output.name for output in with_mqtt.outputs]
    assert b"tgw_mqtt_connected 0.0" in with_mqtt.metrics.render()


def test_a_capture_of_a_device_never_seen_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "captures"
    capture = CaptureWriter(
        CaptureConfig(directory=str(directory)),
        CaptureHeader(source="a", profile="default", catalog="default", kind="tcp", where="h:1"),
        GatewayMetrics(),
    )

    async def main() -> None:
        capture.start()
        await asyncio.sleep(0.2)  # the thread would have opened its first file by now
        await capture.close()

    asyncio.run(main())
    assert not directory.exists()
