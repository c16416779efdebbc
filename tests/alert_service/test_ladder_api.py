"""A region's ladder through the API, over HTTP: read by its operators, changed by county
operators only, validated, audited with before and after, and applied to new alerts only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import AuditLog
from anxin.settings import Settings
from tests import builders
from tests.support.harness import Seeded, ServeApp


@pytest.fixture
async def http(region: Seeded, serve_app: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), region.sessions, FakeClock())
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


def _elders_in(region: Seeded, township: str) -> list[str]:
    villages = {v.code for v in region.plan.villages if v.parent_code == township}
    return [e.code for e in region.plan.elders if e.village_code in villages]


async def test_a_county_operator_changes_a_townships_ladder_and_it_is_audited(
    http: httpx.AsyncClient, region: Seeded
) -> None:
    county = await builders.operator_token(http, "county")
    t01 = await builders.region_id(region, "T01")
    read = (await http.get(f"/api/regions/{t01}/ladder", headers=county)).json()
    assert read["own"] == {} and read["can_edit"] is True
    assert read["effective"]["accept_timeout_s"] == 180  # the county's (pinned) settings

    res = await http.put(
        f"/api/regions/{t01}/ladder",
        headers=county,
        json={"accept_timeout_s": 120, "max_aides": 2},
    )
    assert res.status_code == 200, res.text
    assert res.json()["own"] == {"accept_timeout_s": 120, "max_aides": 2}
    assert res.json()["effective"]["accept_timeout_s"] == 120
    assert res.json()["effective"]["at_risk_s"] == 480  # still the county's
    again = (await http.get(f"/api/regions/{t01}/ladder", headers=county)).json()
    assert again["own"] == {"accept_timeout_s": 120, "max_aides": 2}

    async with region.sessions() as session:
        rows = (
            (await session.execute(select(AuditLog).where(col(AuditLog.action) == "change_ladder")))
            .scalars()
            .all()
        )
    assert [(r.target_type, r.target_id, r.detail) for r in rows] == [
        (
            "region",
            str(t01),
            {"before": {}, "after": {"accept_timeout_s": 120, "max_aides": 2}},
        )
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"accept_timeout_s": 900},  # 15 minutes: the ladder would never move on in time
        {"accept_timeout_s": 0},
        {"accept_timeout_s": -30},
        {"max_aides": 0},
        {"max_aides": 11},
        {"at_risk_s": 0},
        {"centre_answer_s": 1200},
        {"accept_timeout_s": "soon"},
        {"respond_minutes": 30},  # the window is the region's response_minutes, not this
    ],
)
async def test_a_ladder_that_cannot_work_is_refused_and_nothing_changes(
    http: httpx.AsyncClient, region: Seeded, body: dict[str, object]
) -> None:
    county = await builders.operator_token(http, "county")
    t01 = await builders.region_id(region, "T01")
    res = await http.put(f"/api/regions/{t01}/ladder", headers=county, json=body)
    assert res.status_code == 422, res.text
    assert (await http.get(f"/api/regions/{t01}/ladder", headers=county)).json()["own"] == {}


async def test_a_township_operator_reads_their_ladder_but_cannot_change_it(
    http: httpx.AsyncClient, region: Seeded
) -> None:
    t01_operator = await builders.operator_token(http, "t01")
    t01, t02 = await builders.region_id(region, "T01"), await builders.region_id(region, "T02")
    read = await http.get(f"/api/regions/{t01}/ladder", headers=t01_operator)
    assert read.status_code == 200 and read.json()["can_edit"] is False
    refused = await http.put(
        f"/api/regions/{t01}/ladder", headers=t01_operator, json={"accept_timeout_s": 60}
    )
    assert refused.status_code == 403
    assert (await http.get(f"/api/regions/{t02}/ladder", headers=t01_operator)).status_code == 404
    county = await builders.operator_token(http, "county")
    assert (await http.get(f"/api/regions/{t01}/ladder", headers=county)).json()["own"] == {}


async def test_a_live_alert_keeps_its_ladder_a_new_alert_gets_the_changed_one(
    http: httpx.AsyncClient, region: Seeded
) -> None:
    clock = FakeClock()
    elder, other = _elders_in(region, "T01")[:2]
    async with transaction(region.sessions) as session:
        live = await builders.sos(session, elder, clock.now())
    county = await builders.operator_token(http, "county")
    t01 = await builders.region_id(region, "T01")
    res = await http.put(
        f"/api/regions/{t01}/ladder", headers=county, json={"accept_timeout_s": 60}
    )
    assert res.status_code == 200, res.text

    async with transaction(region.sessions) as session:
        new = await builders.sos(session, other, clock.now())
    async with region.sessions() as session:
        kept = await session.get(Alert, live.id)
        changed = await session.get(Alert, new.id)
        assert kept is not None and changed is not None
        assert kept.ladder["accept_timeout_s"] == 180
        assert changed.ladder["accept_timeout_s"] == 60
