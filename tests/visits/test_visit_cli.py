"""`anxin figures visits` as the county runs it: the same figures as the API's, as JSON, a
Chinese table and the .xlsx workbook."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from openpyxl import load_workbook

from anxin import auth
from anxin.db import transaction
from tests import builders
from tests.support.harness import Seeded
from visits import service
from visits.models import VisitChannel

VISITED = datetime(2026, 11, 12, 2, 0, tzinfo=UTC)


async def run(database_url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anxin.cli",
        "figures",
        "visits",
        *args,
        env={**os.environ, "ANXIN_DATABASE_URL": database_url, "COLUMNS": "160"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_command_prints_the_months_rate(
    region: Seeded, database_url: str, tmp_path: Path
) -> None:
    home = await builders.home(region.sessions)
    async with transaction(region.sessions) as session:
        await service.record_visit(
            session,
            channel=VisitChannel.console,
            now=VISITED,
            timezone=builders.TZ,
            elder_id=home.elder_id,
        )
    township = next(v.parent_code for v in region.plan.villages if v.code == _village(region, home))
    assert township is not None
    out = json.loads(await run(database_url, "--month", "2026-11", "--region", township, "--json"))
    async with region.sessions() as session:
        scope = await auth.regions_under(session, await builders.region_id(region, township))
        expected = await service.month_figures(
            session, region_ids=scope, month="2026-11", now=datetime.now(UTC), timezone=builders.TZ
        )
    assert [(r["code"], r["due"], r["visited"]) for r in out] == [
        (r.code, r.due, r.visited) for r in expected
    ]
    assert out[0]["code"] == township and out[0]["visited"] >= 1 and out[0]["due"] > 0
    book = tmp_path / "visits.xlsx"
    table = await run(database_url, "--month", "2026-11", "--region", township, "--xlsx", str(book))
    assert "2026-11 探访关爱月探访率" in table and "未探访名单" in table
    rows = list(load_workbook(book)["探访率"].iter_rows(values_only=True))
    assert rows[0][:3] == ("月份", "地区编码", "地区") and rows[1][1] == township


def _village(region: Seeded, home: builders.Home) -> str:
    return next(e.village_code for e in region.plan.elders if e.code == home.elder.code)
