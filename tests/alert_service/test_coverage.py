"""Coverage: the pure list (who no aide reaches in time), its query on the demo county with a
seasonal place and the new travel modes, and `anxin figures coverage`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlmodel import col

from alert_service import coverage_service
from alert_service.coverage import CoverageHome, Village, coverage, fastest_aide
from anxin.db import transaction
from anxin.logging import configure_logging
from anxin.models import Elder, Region, Responder
from dispatcher.routing import LatLon, Season
from tests.support.harness import Seeded

SUMMER_DAY = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)
WINTER_DAY = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
PASTURE = Season(LatLon(33.0, 109.0), "06-01", "09-30")


def home(elder_id: int, village_id: int = 1, **changes: Any) -> CoverageHome:
    base: dict[str, Any] = {
        "elder_id": elder_id,
        "code": f"E{elder_id:04d}",
        "name": f"elder-{elder_id}",
        "village_id": village_id,
        "village": f"village-{village_id}",
        "township": "T",
        "respond_minutes": 15,
    }
    base.update(changes)
    return CoverageHome(**base)


def ranked(responder_id: int, eta: float, kind: str = "aide") -> dict[str, Any]:
    return {
        "responder_id": responder_id,
        "kind": kind,
        "name": f"r-{responder_id}",
        "distance_km": 1.0,
        "eta_minutes": eta,
        "source": "estimate",
    }


@pytest.mark.parametrize(
    ("ranking", "aide", "eta", "covered"),
    [
        ([ranked(1, 9.0), ranked(2, 12.0), ranked(90, 5.0, "township_centre")], 1, 9.0, True),
        # A tie group may put a fairer aide first: the fastest is still the fastest.
        ([ranked(2, 9.4), ranked(1, 9.0)], 1, 9.0, True),
        ([ranked(1, 15.0)], 1, 15.0, True),
        ([ranked(1, 15.1)], 1, 15.1, False),
        # A centre in time does not make the elder covered: the rule is about aides.
        ([ranked(90, 4.0, "township_centre"), ranked(91, 9.0, "county_centre")], None, None, False),
        ([], None, None, False),
    ],
    ids=["fastest aide", "tie order", "exactly 15", "just late", "only centres", "nobody"],
)
def test_each_elders_fastest_aide(
    ranking: list[dict[str, Any]], aide: int | None, eta: float | None, covered: bool
) -> None:
    found = coverage([home(1)], [ranking], [], {}, WINTER_DAY)
    (reach,) = found.elders
    assert (reach.aide_id, reach.eta_minutes, reach.covered) == (aide, eta, covered)
    assert found.uncovered == ([] if covered else [reach])


def test_uncovered_slowest_first_and_villages_without_an_aide() -> None:
    homes = [home(1, 1), home(2, 1), home(3, 2), home(4, 3), home(5, 3, respond_minutes=30)]
    rankings = [[ranked(7, 20.0)], [ranked(7, 3.0)], [], [ranked(8, 16.0)], [ranked(8, 16.0)]]
    villages = [Village(1, "village-1", "T"), Village(2, "village-2", "T")]
    villages.append(Village(3, "village-3", "T"))
    villages.append(Village(4, "village-4", "T"))  # no elders, no aide
    found = coverage(homes, rankings, villages, {1: 2, 3: 1}, WINTER_DAY)
    # No aide at all first, then the longest arrival; E0005 has 30 minutes, so 16 is in time.
    assert [e.code for e in found.uncovered] == ["E0003", "E0001", "E0004"]
    assert [(v.village, v.elders) for v in found.villages_without_aide] == [
        ("village-2", 1),
        ("village-4", 0),
    ]


@pytest.mark.parametrize(("now", "seasonal"), [(SUMMER_DAY, True), (WINTER_DAY, False)])
def test_the_seasonal_place_is_marked_while_it_applies(now: datetime, seasonal: bool) -> None:
    (reach,) = coverage([home(1, season=PASTURE)], [[ranked(1, 5.0)]], [], {}, now).elders
    assert reach.seasonal is seasonal


def test_fastest_aide_of_no_aides_is_none() -> None:
    assert fastest_aide([ranked(90, 1.0, "county_centre")]) is None


async def elder_reach(region: Seeded, code: str, now: datetime) -> Any:
    async with region.sessions() as session:
        found = await coverage_service.coverage_in(
            session, region_ids=set(await all_regions(region)), now=now
        )
    return next(e for e in found.elders if e.code == code)


async def all_regions(region: Seeded) -> list[int]:
    async with region.sessions() as session:
        return [r for r in (await session.execute(select(col(Region.id)))).scalars() if r]


async def test_a_summer_pasture_far_from_every_aide_is_uncovered_in_summer(
    region: Seeded,
) -> None:
    elder = region.plan.elders[0]
    before = await elder_reach(region, elder.code, SUMMER_DAY)
    assert before.covered and not before.seasonal
    async with transaction(region.sessions) as session:
        await session.execute(
            update(Elder)
            .where(col(Elder.code) == elder.code)
            # About 20 km north of home: far beyond any aide's 15 minutes.
            .values(
                season_address="夏季牧场",
                season_lat=elder.lat + 0.18,
                season_lon=elder.lon,
                season_start="06-01",
                season_end="09-30",
            )
        )
    summer = await elder_reach(region, elder.code, SUMMER_DAY)
    assert summer.seasonal and not summer.covered
    assert summer.eta_minutes is not None and summer.eta_minutes > 15
    winter = await elder_reach(region, elder.code, WINTER_DAY)
    assert not winter.seasonal and winter.eta_minutes == before.eta_minutes


async def test_horseback_over_tracks_and_a_townships_own_speed(region: Seeded) -> None:
    elder = region.plan.elders[0]
    async with transaction(region.sessions) as session:
        village = (
            await session.execute(select(Region).where(col(Region.code) == elder.village_code))
        ).scalar_one()
        township_villages = select(col(Region.id)).where(col(Region.parent_id) == village.parent_id)
        # Every aide of the township rides: the fastest is whoever is nearest by track.
        await session.execute(
            update(Responder)
            .where(col(Responder.village_id).in_(township_villages))
            .values(travel_mode="horseback")
        )
    on_horse = await elder_reach(region, elder.code, WINTER_DAY)
    async with region.sessions() as session:
        aide = await session.get(Responder, on_horse.aide_id)
        assert aide is not None
    assert aide.travel_mode == "horseback"
    async with transaction(region.sessions) as session:
        await session.execute(
            update(Region)
            .where(col(Region.id) == village.parent_id)
            .values(travel_speeds={"horseback": 4.0})
        )
    slow_horses = await elder_reach(region, elder.code, WINTER_DAY)
    # Half the speed: every aide's travel time doubles, so the fastest arrives later.
    assert slow_horses.eta_minutes > on_horse.eta_minutes
    if slow_horses.aide_id == on_horse.aide_id:
        travel = on_horse.eta_minutes - aide.setup_minutes
        assert slow_horses.eta_minutes == pytest.approx(aide.setup_minutes + 2 * travel, abs=0.11)


async def test_figures_coverage_on_the_command_line(
    region: Seeded, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from alert_service.cli import figures_app

    village = region.plan.villages[0]
    async with transaction(region.sessions) as session:
        village_id = (
            await session.execute(select(col(Region.id)).where(col(Region.code) == village.code))
        ).scalar_one()
        await session.execute(
            update(Responder).where(col(Responder.village_id) == village_id).values(on_duty=False)
        )
    monkeypatch.setenv("ANXIN_DATABASE_URL", database_url)
    monkeypatch.setenv("ANXIN_LOG_LEVEL", "warning")
    runner = CliRunner()
    try:
        as_json = await asyncio.to_thread(runner.invoke, figures_app, ["coverage", "--json"])
        table = await asyncio.to_thread(runner.invoke, figures_app, ["coverage"])
        township = await asyncio.to_thread(
            runner.invoke, figures_app, ["coverage", "--json", "--region", str(village.parent_code)]
        )
    finally:
        configure_logging("warning")
    assert as_json.exit_code == 0, as_json.output
    out = json.loads(as_json.output)
    assert out["elders"] == len(region.plan.elders)
    assert [v["village"] for v in out["villages_without_aide"]] == [village.name]
    assert table.exit_code == 0, table.output
    assert "无在岗助老员的村" in table.output and village.name in table.output
    assert f"{len(region.plan.elders)} 位老人中 {len(out['uncovered'])} 位" in table.output
    in_township = {e.code for e in region.plan.elders if e.village_code in village_codes(region)}
    assert {e["code"] for e in json.loads(township.output)["reach"]} == in_township


def village_codes(region: Seeded) -> set[str]:
    township = region.plan.villages[0].parent_code
    return {v.code for v in region.plan.villages if v.parent_code == township}


async def test_a_regions_travel_speeds_over_http(region: Seeded) -> None:
    from pydantic import SecretStr

    from anxin.app import create_app
    from anxin.clock import FakeClock
    from anxin.settings import Settings
    from tests.builders import operator_token, region_id

    app = create_app(Settings(database_url=SecretStr("postgresql://unused")), region.sessions)
    app.state.ctx.clock = FakeClock()
    township = region.plan.townships[0].code
    village = next(v.code for v in region.plan.villages if v.parent_code == township)
    county_id = await region_id(region, region.plan.county.code)
    township_id, village_id = await region_id(region, township), await region_id(region, village)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://anxin"
    ) as http:
        county = await operator_token(http, "county")
        url = "/api/regions/{}/travel-speeds"
        res = await http.put(url.format(county_id), json={"horseback": 7}, headers=county)
        assert res.status_code == 200, res.text
        res = await http.put(url.format(township_id), json={"horseback": 5.5}, headers=county)
        assert res.json()["own"] == {"horseback": 5.5}
        effective = (await http.get(url.format(village_id), headers=county)).json()["effective"]
        # The township's own beats the county's; the other modes keep the defaults.
        assert (effective["horseback"], effective["mountain_walk"], effective["car"]) == (
            5.5,
            3.0,
            40.0,
        )
        for bad in ({"horseback": 500}, {"rocket": 10}, {"horseback": "fast"}):
            res = await http.put(url.format(township_id), json=bad, headers=county)
            assert res.status_code == 422, bad
        township_op = next(o.username for o in region.plan.operators if o.region_code == township)
        own = await operator_token(http, township_op)
        res = await http.put(url.format(township_id), json={"horseback": 9}, headers=own)
        assert res.status_code == 403
        assert (await http.get(url.format(township_id), headers=own)).json()["can_edit"] is False
    async with region.sessions() as session:
        stored = await session.get(Region, township_id)
    assert stored is not None and stored.travel_speeds == {"horseback": 5.5}
