"""An elder's seasonal place (季节住址/季节纬度/季节经度/季节起/季节止) and the new travel modes
(骑马, 山路步行) through the registry: the import, the export round trip, and PATCH over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlmodel import col

from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import SessionMaker
from anxin.models import Elder, Responder
from anxin.settings import Settings
from registry.apply import import_registry_file
from registry.export import export_registry
from registry.report import ImportReport
from tests.builders import operator_token
from tests.support.harness import Seeded

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
REGIONS = (
    "区域编码,名称,级别,上级编码,纬度,经度\n"
    "X01,试点县,县,,32.68,109.03\n"
    "X01-T1,青溪镇,乡镇,X01,32.75,109.10\n"
    "X01-T1-V1,柳树坪村,村,X01-T1,32.76,109.12\n"
)
ELDERS = (
    "老人编号,姓名,所属村,纬度,经度,季节住址,季节纬度,季节经度,季节起,季节止\n"
    "E201,王秀英,柳树坪村,32.761,109.121,夏季牧场,32.9,109.3,6-1,9月30日\n"
    "E202,李桂兰,柳树坪村,32.762,109.122,,,,,\n"
)
AIDES = (
    "姓名,手机号,所属村,纬度,经度,出行方式\n"
    "赵大山,+8613800000201,柳树坪村,32.76,109.12,骑马\n"
    "钱小河,+8613800000202,柳树坪村,32.76,109.12,山路步行\n"
)


async def _import(sessions: SessionMaker, text: str, name: str) -> ImportReport:
    return await import_registry_file(sessions, text.encode(), name, now=NOW)


async def _elder(sessions: SessionMaker, code: str) -> Elder:
    async with sessions() as session:
        return (await session.execute(select(Elder).where(col(Elder.code) == code))).scalar_one()


async def test_import_and_export_seasons_and_travel_modes(
    sessions: SessionMaker, tmp_path: Path
) -> None:
    assert (await _import(sessions, REGIONS, "区域.csv")).committed
    report = await _import(sessions, ELDERS, "老人.csv")
    assert report.ok, report.summary_lines()
    pasture = await _elder(sessions, "E201")
    assert (pasture.season_address, pasture.season_lat, pasture.season_lon) == (
        "夏季牧场",
        32.9,
        109.3,
    )
    assert (pasture.season_start, pasture.season_end) == ("06-01", "09-30")
    assert (await _elder(sessions, "E202")).season_start is None
    report = await _import(sessions, AIDES, "助老员.csv")
    assert report.ok, report.summary_lines()
    async with sessions() as session:
        modes = dict(
            (await session.execute(select(col(Responder.name), col(Responder.travel_mode)))).all()
        )
    assert modes == {"赵大山": "horseback", "钱小河": "mountain_walk"}

    first = await export_registry(sessions, tmp_path / "first")
    for path in first:
        again = await import_registry_file(sessions, path.read_bytes(), path.name, now=NOW)
        assert again.ok and again.changed == 0, again.summary_lines()
    elders_csv = next(p for p in first if p.stem == "elders").read_text("utf-8-sig")
    assert "季节起" in elders_csv and "06-01" in elders_csv
    aides_csv = next(p for p in first if p.stem == "aides").read_text("utf-8-sig")
    assert "骑马" in aides_csv and "山路步行" in aides_csv


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("E203,周大娘,柳树坪村,32.761,109.121,牧场,32.9,109.3,6-1,", "季节纬度"),
        ("E203,周大娘,柳树坪村,32.761,109.121,牧场,32.9,109.3,6-1,2月30日", "季节止"),
        ("E203,周大娘,柳树坪村,32.761,109.121,牧场,32.9,109.3,夏天,9-30", "季节起"),
    ],
    ids=["no last day", "no such day", "not a day"],
)
async def test_a_partial_or_wrong_season_is_refused_with_its_column(
    sessions: SessionMaker, row: str, column: str
) -> None:
    assert (await _import(sessions, REGIONS, "区域.csv")).committed
    report = await _import(sessions, ELDERS.splitlines()[0] + "\n" + row + "\n", "老人.csv")
    assert not report.ok
    assert any(f.column == column for f in report.refused), report.summary_lines()
    async with sessions() as session:
        assert (
            await session.execute(select(Elder).where(col(Elder.code) == "E203"))
        ).first() is None


async def test_patch_an_elders_season_over_http(region: Seeded) -> None:
    settings = Settings(database_url=SecretStr("postgresql://unused"))
    app = create_app(settings, region.sessions, FakeClock())
    code = region.plan.elders[0].code
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://anxin"
    ) as http:
        headers = await operator_token(http, "admin")
        elder_id = (await _elder(region.sessions, code)).id
        url = f"/api/elders/{elder_id}"
        season = {
            "season_address": "县城女儿家",
            "season_lat": 32.70,
            "season_lon": 109.05,
            "season_start": "11-15",
            "season_end": "3-15",
        }
        res = await http.patch(url, json=season, headers=headers)
        assert res.status_code == 200, res.text
        assert res.json()["season_end"] == "03-15"
        stored = await _elder(region.sessions, code)
        assert (stored.season_start, stored.season_end, stored.season_lat) == (
            "11-15",
            "03-15",
            32.70,
        )
        # Half a season is refused; a wrong day at its field; none of it is stored.
        half = await http.patch(url, json={"season_start": None}, headers=headers)
        assert half.status_code == 422, half.text
        bad = await http.patch(url, json={"season_end": "02-30"}, headers=headers)
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "season_end"]
        assert (await _elder(region.sessions, code)).season_end == "03-15"
        # All of it cleared: the elder is at home all year.
        cleared = dict.fromkeys(season)
        res = await http.patch(url, json=cleared, headers=headers)
        assert res.status_code == 200, res.text
        assert (await _elder(region.sessions, code)).season_lat is None
