"""bench/pipeline.py runs end to end and loses nothing.

A tiny run (``--smoke``: one low rate for two seconds, two subscribers, a small MQTT
backlog) of real processes: ``tgw run``, the bare relay, paho alone, mosquitto. Nothing
about speed is asserted: the machine is shared and noisy. What is asserted is that
every frame fed reached every subscriber and the MQTT counter, and that no target
counted a drop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "bench" / "pipeline.py"
GUARD = 300.0
"""Seconds after which the run is killed: a hang guard, not a timing assumption."""


def test_the_pipeline_benchmark_runs_and_loses_nothing(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(PIPELINE), "--smoke", "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(figures.read_text(encoding="utf-8"))

    relayed = document["relay"]
    assert sorted(run["target"] for run in relayed) == ["bare", "tgw"]
    for run in relayed:
        assert run["fed"] > 0
        lost = {
            key: run[key]
            for key in ("missing_frames", "missing_ws", "extra_ws", "missing_mqtt", "gaps")
            if run[key]
        }
        assert lost == {}, run["target"]
        assert (run["lost"], run["dropped"]) == (0, 0), run
        assert run["samples"] > 0  # the timing subscriber saw the window's messages

    published = document["mqtt"]
    assert sorted(run["sender"] for run in published) == ["bare", "paho", "paho-loop", "tgw"]
    for run in published:
        assert run["delivered"] == run["messages"], run
        assert run["lost"] == 0, run

    assert "Goals of issue 11" in done.stdout
