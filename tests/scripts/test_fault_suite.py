"""The fault suite of issue 10, shortened for CI: each scenario of scripts/faults.py with
real mosquitto, fwsim and `tgw run` processes, at a rate and for durations a loaded
2-core machine carries; `python scripts/faults.py` runs them in full.

A scenario fails with the guarantees that did not hold and the figures that say so; a
part that does not start (no mosquitto, say) fails it too: never a skip.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts import faults
from scripts.fault_suite.report import format_table
from scripts.fault_suite.rig import Common
from scripts.fault_suite.scenarios import (
    SCENARIOS,
    BrokerOutage,
    CorruptState,
    DiskFull,
    GatewayKill,
    Replug,
    RestartWhileAway,
    Scenario,
)

COMMON = Common(rate=150.0, drain_timeout=60.0, quiet=2.0)
"""150 frames/s, a rate a loaded machine carries; the drain waits for what is missing for
a minute at most (a guard: it ends as soon as everything arrived)."""

SHORT: dict[str, Scenario] = {
    "broker": BrokerOutage(warmup=1.5, away=3.0, after=1.5),
    "kill": GatewayKill(warmup=1.5, backlog=1.0, down=0.5, after=1.5),
    "restart": RestartWhileAway(warmup=1.5, away=3.0, restart_at=1.0, after=1.0),
    "disk-full": DiskFull(duration=4.5, limit=128 * 1024),
    "corrupt": CorruptState(duration=2.0),
    "replug": Replug(replugs=10, plugged=0.4, unplugged=0.2),
}


def test_every_scenario_has_a_short_version() -> None:
    assert list(SHORT) == list(SCENARIOS)


@pytest.mark.parametrize("name", list(SHORT))
def test_scenario(name: str, tmp_path: Path) -> None:
    result = SHORT[name].run(COMMON, tmp_path)
    assert result.checks, "a scenario checks something"
    if not result.passed:
        pytest.fail(f"{result.failures()}\n\n{format_table([result])}", pytrace=False)


def test_the_script_defaults_are_the_full_runs() -> None:
    arguments = faults.build_parser().parse_args([])
    assert faults.common_settings(arguments).rate == 1000.0
    chosen = faults.scenarios(arguments)
    assert list(chosen) == list(SCENARIOS)
    broker = chosen["broker"]
    assert isinstance(broker, BrokerOutage)
    assert broker.away == 300.0
    replug = chosen["replug"]
    assert isinstance(replug, Replug)
    assert replug.replugs == 100


def test_the_script_says_what_it_does_and_refuses_nonsense() -> None:
    script = Path(faults.__file__)
    shown = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True
    )
    for name in SCENARIOS:
        assert f"\n  {name} " in shown.stdout
    assert "Exit status" in shown.stdout
    refused = subprocess.run(
        [sys.executable, str(script), "--restart-away", "5", "--restart-at", "9"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "--restart-at must fall within --restart-away" in refused.stderr


def test_the_script_will_not_reuse_a_previous_runs_folder(tmp_path: Path) -> None:
    (tmp_path / "corrupt").mkdir()
    with pytest.raises(SystemExit) as exit_status:
        faults.main(["--only", "corrupt", "--workdir", str(tmp_path)])
    assert exit_status.value.code == 2
