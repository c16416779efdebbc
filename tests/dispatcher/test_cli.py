"""`import-travel-times`: the operator's way to load a road router's table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anxin.db import make_engine
from anxin.logging import configure_logging
from dispatcher.cli import app
from tests.conftest import Seeded


async def _stored(database_url: str) -> list[tuple[str, float, str]]:
    from sqlalchemy import text

    engine = make_engine(database_url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT e.code, t.minutes, t.source FROM travel_times t "
                "JOIN elders e ON e.id = t.elder_id ORDER BY e.code"
            )
        )
        result = [(code, float(minutes), source) for code, minutes, source in rows]
    await engine.dispose()
    return result


def test_import_travel_times_stores_good_lines_and_lists_bad_ones(
    region: Seeded, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aide = region.plan.aides[0].phone
    table = tmp_path / "osrm.csv"
    table.write_text(
        f"elder_code,responder_phone,minutes\nE0001,{aide},12.5\nE9999,{aide},3\nE0002,{aide},x\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("ANXIN_DATABASE_URL", database_url)

    try:
        result = CliRunner().invoke(app, ["import-travel-times", str(table), "--source", "osrm"])
    finally:
        # The command sets up logging on the runner's captured stderr, closed once it returns;
        # later tests must log to the real one.
        configure_logging("warning")

    assert result.exit_code == 0, result.output
    assert "line 3: unknown elder E9999" in result.output
    assert "line 4: minutes is not a number" in result.output
    assert "1 travel times stored, 2 lines skipped" in result.output
    assert asyncio.run(_stored(database_url)) == [("E0001", 12.5, "osrm")]
