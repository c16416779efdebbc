"""Every bundled scenario plays to a pass on scenario time; two short ones also at real time."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from anxin.db import SessionMaker
from device_sim.scenario.model import bundled_scenarios, load_scenario
from device_sim.scenario.player import play_in_process
from device_sim.scenario.render import render

REAL_TIME = ("duplicate_resend.yaml", "smoke_and_gas_call_120.yaml")


def _report(result_text: str) -> str:
    return "\n" + result_text


@pytest.mark.parametrize("path", bundled_scenarios(), ids=lambda p: p.stem)
async def test_scenario_passes_on_scenario_time(
    path: Path, sessions: SessionMaker, database_url: str, mqtt_url: str, engine: AsyncEngine
) -> None:
    scenario = load_scenario(path)
    result = await play_in_process(
        scenario, database_url=database_url, mqtt_url=mqtt_url, engine=engine
    )
    console = Console(record=True, width=200)
    render(result, console)
    assert result.passed, _report(console.export_text())


@pytest.mark.parametrize("name", REAL_TIME)
async def test_short_scenario_passes_at_real_time(
    name: str, sessions: SessionMaker, database_url: str, mqtt_url: str, engine: AsyncEngine
) -> None:
    scenario = load_scenario(Path(bundled_scenarios()[0]).parent / name)
    result = await play_in_process(
        scenario, database_url=database_url, mqtt_url=mqtt_url, engine=engine, real_time=True
    )
    console = Console(record=True, width=200)
    render(result, console)
    assert result.mode == "real time"
    assert result.passed, _report(console.export_text())
