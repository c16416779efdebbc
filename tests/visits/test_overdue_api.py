"""The operators' overdue visits over HTTP (GET /api/visits/overdue, the console's 逾期探访
tab): who is overdue, since when and whose elder, gone once visited, a major change past its
24 hours; the same elders as the per-elder status says (issue 18 item 4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import Elder, Region, pk
from anxin.settings import Settings
from tests import builders
from tests.support.harness import Seeded, ServeApp
from visits import schedule, service


def local(day: int, hour: int = 10, month: int = 12) -> datetime:
    """A Shanghai time in 2026 as UTC."""
    return datetime(2026, month, day, hour, tzinfo=UTC) - timedelta(hours=8)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(local(2))


@pytest.fixture
async def http(
    region: Seeded, serve_app: ServeApp, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), region.sessions, clock)
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def monthly_village(region: Seeded) -> tuple[int, list[int]]:
    """A village whose elders are all monthly (独居 only)."""
    code = region.plan.elders[0].village_code
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
        for elder in elders:
            for flag in schedule.CATEGORIES:
                setattr(elder, flag, flag == "living_alone")
    assert len(elders) >= 3
    return pk(village), [pk(e) for e in elders]


async def test_overdue_elders_with_their_aide_due_date_and_days(
    http: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    village, (a, b, c, *_rest) = await monthly_village(region)
    county = await builders.operator_token(http, "county")

    async def visit(elder: int, at: datetime) -> None:
        clock.set(at)
        res = await http.post(f"/api/elders/{elder}/visits", headers=county, json={"mode": "phone"})
        assert res.status_code == 201, res.text

    await visit(a, local(3, month=11))  # November visited: not overdue in December
    await visit(b, local(20, month=10))  # October only: November missed
    clock.set(local(2))
    res = await http.get("/api/visits/overdue", headers=county)
    assert res.status_code == 200, res.text
    rows = {r["elder_id"]: r for r in res.json()}
    assert a not in rows
    assert (rows[b]["due_date"], rows[b]["days_overdue"], rows[b]["last_visit"]) == (
        "2026-11-30",
        2,
        "2026-10-20",
    )
    assert rows[c]["last_visit"] is None and rows[c]["days_overdue"] == 2
    assert rows[b]["village_id"] == village and rows[b]["village_name"]
    assert rows[b]["owner_name"] and rows[b]["tier"] == "key" and not rows[b]["major_change"]

    # Visited today: off the list.
    await visit(b, local(2, 11))
    rows = {
        r["elder_id"]: r for r in (await http.get("/api/visits/overdue", headers=county)).json()
    }
    assert b not in rows and c in rows

    # A's major change, marked yesterday noon: its 24 hours are over, unvisited.
    clock.set(local(1, 12))
    res = await http.post(f"/api/elders/{a}/major-change", headers=county, json={"note": "住院"})
    assert res.status_code == 201
    clock.set(local(2, 14))
    rows = {
        r["elder_id"]: r for r in (await http.get("/api/visits/overdue", headers=county)).json()
    }
    assert rows[a]["major_change"] and rows[a]["due_date"] == "2026-12-02"


async def test_the_list_is_the_elders_statuses_overdue_county_wide(
    http: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    await monthly_village(region)
    county = await builders.operator_token(http, "county")
    listed = {r["elder_id"] for r in (await http.get("/api/visits/overdue", headers=county)).json()}
    async with region.sessions() as session:
        villages = {
            pk(r)
            for r in (
                await session.execute(select(Region).where(col(Region.level) == "village"))
            ).scalars()
        }
        slow = await service.elder_statuses(
            session, village_ids=villages, now=clock.now(), timezone=builders.TZ
        )
    assert listed == {pk(r.elder) for r in slow if r.status.overdue}
