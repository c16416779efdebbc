"""The fault suite (issue 8): every role as its own processes (gateway ×2, watcher ×2,
dispatcher ×2, web) on a Postgres and a Mosquitto of the suite's own; per scenario a burst of
2,000 SOS from 500 homes while a role is SIGKILLed and restarted, Mosquitto is restarted or
Postgres is restarted (and a baseline with no fault). Every SOS must be exactly one alert's,
every alert must get exactly one call-out SMS per ladder step, no step missing.

The table is printed and saved to artifacts/fault_suite.{json,txt}. Nothing here asserts on
time: the max delay column is a figure to read, not a pass mark."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from device_sim.faults.options import SCENARIOS, SuiteOptions
from device_sim.faults.report import print_suite, report_text
from device_sim.faults.suite import run_fault_suite
from tests.support.harness import mosquitto_binary

# The figures; a slower CI machine may scale the burst down (the counts stay exact).
HOMES = int(os.environ.get("ANXIN_FAULT_SUITE_HOMES", "500"))
PRESSES = int(os.environ.get("ANXIN_FAULT_SUITE_PRESSES", str(HOMES * 4)))


# In CI at full size (~6–7 min on this machine); ANXIN_FAULT_SUITE=0 leaves it out locally.
@pytest.mark.skipif(
    os.environ.get("ANXIN_FAULT_SUITE") == "0", reason="ANXIN_FAULT_SUITE=0: left out"
)
@pytest.mark.timeout(660)
async def test_no_sos_lost_or_doubled_under_crashes_and_restarts(artifacts_dir: Path) -> None:
    mosquitto_binary()  # skips outside CI when there is none
    console = Console(width=140)
    report = await run_fault_suite(SuiteOptions(homes=HOMES, presses=PRESSES), console=console)
    print_suite(report, console)
    (artifacts_dir / "fault_suite.json").write_text(report.to_json(), encoding="utf-8")
    (artifacts_dir / "fault_suite.txt").write_text(report_text(report), encoding="utf-8")

    figures = json.loads(report.to_json())
    assert [s["scenario"] for s in figures["scenarios"]] == list(SCENARIOS)
    for s in figures["scenarios"]:
        where = f"{s['scenario']}: {s['detail']} {s['notes']}"
        assert s["messages_sent"] == PRESSES, where
        # One alert per home: its four presses joined it while it was open.
        assert s["alerts_expected"] == s["alerts_found"] == min(HOMES, PRESSES), where
        assert s["steps_seen"] == s["steps_expected"] > 0, where
        assert s["missing"] == 0, where
        assert s["duplicates"] == 0, where
    assert figures["ok"] is True
