"""The voice settings of a region's ladder over HTTP (issue 19): a county operator turns P2
calls on for one township and shortens the wait before the call; an alert raised there after
the change carries them (and its elder's night hours) in its snapshot; nonsense is a 422."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from alert_service.models import Alert
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import Elder
from anxin.settings import Settings
from tests import builders
from tests.support.harness import Seeded, ServeApp


@pytest.fixture
async def http(region: Seeded, serve_app: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), region.sessions, FakeClock())
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def test_a_township_calls_p2_too_and_new_alerts_carry_it(
    http: httpx.AsyncClient, region: Seeded
) -> None:
    county = await builders.operator_token(http, "county")
    t01 = await builders.region_id(region, "T01")
    res = await http.put(
        f"/api/regions/{t01}/ladder",
        headers=county,
        json={"voice_priorities": [1, 2], "voice_after_s": 45, "voice_at_night": False},
    )
    assert res.status_code == 200, res.text
    effective = res.json()["effective"]
    assert effective["voice_priorities"] == [1, 2] and effective["voice_after_s"] == 45
    assert effective["voice_at_night"] is False

    villages = {v.code for v in region.plan.villages if v.parent_code == "T01"}
    elder = next(e for e in region.plan.elders if e.village_code in villages)
    async with transaction(region.sessions) as session:
        alert: Alert = await builders.sos(session, elder.code, FakeClock().now())
    assert alert.ladder["voice_priorities"] in ([1, 2], (1, 2))
    assert alert.ladder["voice_after_s"] == 45
    async with region.sessions() as session:
        row = await session.get(Elder, alert.elder_id)
    assert row is not None
    assert (alert.ladder["night_start"], alert.ladder["night_end"]) == (
        row.night_start,
        row.night_end,
    )


@pytest.mark.parametrize(
    "body",
    [
        {"voice_priorities": [3]},
        {"voice_after_s": -1},
        {"voice_after_s": 900},
        {"night_start": "20:00"},
    ],
    ids=["P3 is never called", "negative wait", "wait past the 15 minutes", "night is the elder's"],
)
async def test_nonsense_voice_settings_are_refused(
    http: httpx.AsyncClient, region: Seeded, body: dict[str, object]
) -> None:
    county = await builders.operator_token(http, "county")
    t01 = await builders.region_id(region, "T01")
    res = await http.put(f"/api/regions/{t01}/ladder", headers=county, json=body)
    assert res.status_code == 422, res.text
