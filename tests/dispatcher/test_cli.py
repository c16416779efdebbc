"""`import-travel-times`: the operator's way to load a road router's table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anxin.db import make_engine
from anxin.logging import configure_logging
from dispatcher.cli import app
from tests.support.harness import Seeded


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

    # Reported as the registry import reports: counts, then each refused line in line order,
    # in Chinese; exit 1 because lines were refused, the good one stored all the same.
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert "行程时间 travel times: 存入 1 stored, 拒绝 2 lines refused" in lines[1]
    assert lines[2:] == [
        "  拒绝 refused — 第3行 row 3: 找不到老人编号“E9999”：请先导入老人表 / unknown elder E9999",
        "  拒绝 refused — 第4行 row 4 列「minutes」: 分钟不是数字 / minutes is not a number",
    ]
    assert asyncio.run(_stored(database_url)) == [("E0001", 12.5, "osrm")]


def test_import_travel_times_exits_0_when_every_line_is_stored(
    region: Seeded, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aide = region.plan.aides[0].phone
    table = tmp_path / "osrm.csv"
    table.write_text(f"老人编号,助老员电话,分钟\nE0001,{aide},12.5\n", encoding="utf-8")
    monkeypatch.setenv("ANXIN_DATABASE_URL", database_url)
    try:
        result = CliRunner().invoke(app, ["import-travel-times", str(table)])
    finally:
        configure_logging("warning")
    assert result.exit_code == 0, result.output
    assert "存入 1 stored, 拒绝 0 lines refused" in result.output
