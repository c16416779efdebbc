"""Care visits through the API over HTTP, and the month's figures checked against a month counted
by hand: an operator's phone and home visits (a second the same day 409, one in the future 422,
both kept), a major change due within 24 h, a region's visit plan, the rate in JSON and .xlsx."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update
from sqlmodel import col

from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import Elder, Region
from anxin.settings import Settings
from tests import builders
from tests.support.harness import Seeded, ServeApp
from visits import schedule
from visits.models import Visit

CATEGORY_FLAGS = list(schedule.CATEGORIES)


def local(day: int, hour: int = 10, month: int = 11) -> datetime:
    """A Shanghai time in 2026 as UTC."""
    return datetime(2026, month, day, hour, tzinfo=UTC) - timedelta(hours=8)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(local(1))


@pytest.fixture
async def http(
    region: Seeded, serve_app: ServeApp, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), region.sessions, clock)
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def village_of_five(region: Seeded) -> tuple[str, list[int]]:
    """The village with the most elders: five of them get the categories this month is counted
    with (A 失智 weekly, B 独居 monthly, C none quarterly, D 空巢 monthly, E 半失能 monthly);
    the rest left the registry in October, so they are due nothing in November."""
    counts: dict[str, int] = {}
    for e in region.plan.elders:
        counts[e.village_code] = counts.get(e.village_code, 0) + 1
    code = max(counts, key=lambda c: counts[c])
    assert counts[code] >= 5
    flags = [{"dementia"}, {"living_alone"}, set(), {"empty_nest"}, {"semi_disabled"}]
    async with transaction(region.sessions) as session:
        village = (
            await session.execute(select(Region).where(col(Region.code) == code))
        ).scalar_one()
        elders = list(
            (
                await session.execute(
                    select(Elder).where(col(Elder.village_id) == village.id).order_by(col(Elder.id))
                )
            ).scalars()
        )
        for elder, mine in zip(elders, flags, strict=False):
            for flag in CATEGORY_FLAGS:
                setattr(elder, flag, flag in mine)
        rest = [e.id for e in elders[5:]]
        await session.execute(
            update(Elder).where(col(Elder.id).in_(rest)).values(archived_at=local(15, month=10))
        )
    return code, [e.id for e in elders[:5] if e.id is not None]


async def test_a_month_counted_by_hand(
    http: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    code, (a, b, c, d, e) = await village_of_five(region)

    async def visit(elder: int, at: datetime, **body: Any) -> httpx.Response:
        clock.set(at)
        county = await builders.operator_token(http, "county")  # a login's token lasts hours
        return await http.post(
            f"/api/elders/{elder}/visits", headers=county, json={"mode": "home", **body}
        )

    # A, weekly: weeks 1, 2 and 4 (3–9, 10, 24); week 3 (15–21) missed.
    for day in (3, 10, 24):
        assert (await visit(a, local(day))).status_code == 201
    # B, monthly: the 15th by phone, and a second report that day (kept, not counted) ...
    assert (await visit(b, local(15), mode="phone", note="电话问候")).status_code == 201
    again = await visit(b, local(15, 16))
    assert again.status_code == 409 and again.json()["detail"]["reason"] == "same_day"
    # ... then a stay in hospital marked at noon: its visit is due within 24 h, made next morning.
    clock.set(local(15, 12))
    county = await builders.operator_token(http, "county")
    res = await http.post(f"/api/elders/{b}/major-change", headers=county, json={"note": "住院"})
    assert res.status_code == 201 and res.json()["due_by"].startswith("2026-11-16T04:00")
    assert (await visit(b, local(16, 9))).status_code == 201
    # C, quarterly: a visit, but nothing is due before December.
    assert (await visit(c, local(20))).status_code == 201
    # D: only a report stamped in the future (kept, counts nowhere). E: never visited.
    ahead = await visit(d, local(20), visited_at=local(25).isoformat())
    assert ahead.status_code == 422 and ahead.json()["detail"][0]["reason"] == "future"

    clock.set(local(1, 10, month=12))
    county = await builders.operator_token(http, "county")
    res = await http.get(
        "/api/figures/visits", headers=county, params={"month": "2026-11", "region": code}
    )
    assert res.status_code == 200, res.text
    (row,) = res.json()
    # Due: A 4 weeks + B's month + B's major change + D's month + E's month = 8; visited 3+1+1.
    assert (row["code"], row["due"], row["visited"], row["pending"]) == (code, 8, 5, 0)
    assert row["rate"] == pytest.approx(5 / 8)
    assert (row["elders_due"], row["elders_all_visited"]) == (4, 1)
    missed = [(m["elder_id"], m["kind"], m["start"], m["reason"]) for m in row["missed"]]
    assert missed == [
        (a, "periodic", "2026-11-15", "not_visited"),
        (d, "periodic", "2026-11-01", "rejected"),  # its one report (the 25th) refused
        (e, "periodic", "2026-11-01", "not_visited"),
    ]
    async with region.sessions() as session:
        kept = (await session.execute(select(col(Visit.status), col(Visit.reject_reason)))).all()
    assert sorted(kept, key=str) == sorted(
        [("counted", None)] * 6 + [("rejected", "same_day"), ("rejected", "future")], key=str
    )

    xlsx = await http.get(
        "/api/figures/visits.xlsx", headers=county, params={"month": "2026-11", "region": code}
    )
    assert xlsx.status_code == 200
    book = load_workbook(io.BytesIO(xlsx.content))
    rates = list(book["探访率"].iter_rows(values_only=True))
    assert rates[1][4:7] == ("8", "5", "62.5%")
    names = list(book["未探访名单"].iter_rows(values_only=True))
    assert [r[6] for r in names[1:]] == ["未探访", "探访记录未被采纳", "未探访"]


async def test_an_elders_visits_and_what_is_due(
    http: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    _, (a, b, *_) = await village_of_five(region)
    clock.set(local(10))
    county = await builders.operator_token(http, "county")
    await http.post(f"/api/elders/{b}/visits", headers=county, json={"mode": "phone"})
    await http.post(f"/api/elders/{a}/major-change", headers=county, json={"note": "老伴去世"})
    clock.set(local(11, 11))
    county = await builders.operator_token(http, "county")
    res = (await http.get(f"/api/elders/{a}/visits", headers=county)).json()
    assert (res["tier"], res["every"], res["period_start"], res["period_end"]) == (
        "high",
        "week",
        "2026-11-08",
        "2026-11-14",
    )
    assert res["overdue"] is True and res["major_change_due_by"].startswith("2026-11-11T02:00")
    mine = (await http.get(f"/api/elders/{b}/visits", headers=county)).json()
    assert mine["visited_this_period"] == "2026-11-10" and mine["overdue"] is False
    assert [v["mode"] for v in mine["visits"]] == ["phone"]


async def test_a_regions_visit_plan(http: httpx.AsyncClient, region: Seeded) -> None:
    county = await builders.operator_token(http, "county")
    t01 = await builders.operator_token(http, "t01")
    township = await builders.region_id(region, "T01")
    village = next(v.code for v in region.plan.villages if v.parent_code == "T01")
    village_id = await builders.region_id(region, village)
    read = (await http.get(f"/api/regions/{village_id}/visit-plan", headers=t01)).json()
    assert read["own"] == {} and read["effective"] == schedule.VisitPlan().snapshot()
    assert read["can_edit"] is False
    body = {"key_every": "week", "high_categories": ["dementia", "living_alone+empty_nest"]}
    assert (
        await http.put(f"/api/regions/{township}/visit-plan", headers=t01, json=body)
    ).status_code == 403
    res = await http.put(f"/api/regions/{township}/visit-plan", headers=county, json=body)
    assert res.status_code == 200 and res.json()["own"] == body
    effective = (await http.get(f"/api/regions/{village_id}/visit-plan", headers=t01)).json()
    assert effective["own"] == {} and effective["effective"]["key_every"] == "week"
    assert effective["effective"]["high_categories"] == body["high_categories"]
    for bad in ({"key_every": "fortnight"}, {"high_categories": ["orphan"]}, {"colour": 1}):
        res = await http.put(f"/api/regions/{township}/visit-plan", headers=county, json=bad)
        assert res.status_code == 422, (bad, res.text)
