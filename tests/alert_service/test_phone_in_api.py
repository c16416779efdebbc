"""Phone-in alerts (代报警, issue 20 item 1) over HTTP: an operator raises an alert for a caller,
its 15-minute clock from the call, the same ladder's step 0 as a device's, the caller on the
alert and its timeline; a second call for an elder in an open alert joins it, saying so; a
caller not in the registry is raised at a village and an address; another township's elder is
not there; bad input is refused with nothing written; the figures split by source."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import Alert
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import AuditLog, Elder
from anxin.settings import Settings
from tests import builders
from tests.support.harness import Seeded, ServeApp


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http(
    region: Seeded, serve_app: ServeApp, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), region.sessions, clock)
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def _elder_id(region: Seeded, township: str, index: int = 0) -> int:
    villages = builders.village_codes(region, township)
    code = [e.code for e in region.plan.elders if e.village_code in villages][index]
    async with region.sessions() as session:
        elder = (await session.execute(select(Elder).where(col(Elder.code) == code))).scalar_one()
    assert elder.id is not None
    return elder.id


async def _alert_count(region: Seeded) -> int:
    async with region.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Alert))).scalar_one())


async def test_a_phone_in_raises_an_alert_whose_clock_starts_at_the_call(
    http: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    t01 = await builders.operator_token(http, "t01")
    elder_id = await _elder_id(region, "T01")
    body = {
        "elder_id": elder_id,
        "kind": "fall",
        "caller": "neighbour",
        "caller_phone": "+8613800001111",
        "note": "邻居听见摔倒声",
    }
    res = await http.post("/api/alerts", headers=t01, json=body)
    assert res.status_code == 201, res.text
    out = res.json()
    assert out["joined"] is False and "已报警" in out["message"]
    alert = out["alert"]
    assert alert["source"] == "phone_in" and alert["kind"] == "fall" and alert["priority"] == 1
    assert alert["caller_role"] == "neighbour" and alert["caller_phone"] == "+8613800001111"
    assert alert["call_120"] is True  # as a fall detector's alert
    stored = await builders.alert(region.sessions, alert["id"])
    assert stored.raised_at == clock.now().replace(microsecond=stored.raised_at.microsecond)
    assert stored.respond_by == stored.raised_at + timedelta(minutes=15)
    # The same ladder as a device alert: ranked and step 0 asked in the same request.
    actions = [t["action"] for t in alert["timeline"]]
    assert actions[0] == "raised" and "ranked" in actions and "phone_in" in actions
    assert alert["attempts"] and alert["attempts"][0]["step"] == 0
    phone_in = next(t for t in alert["timeline"] if t["action"] == "phone_in")
    assert phone_in["detail"]["caller"] == "neighbour"
    assert phone_in["detail"]["note"] == "邻居听见摔倒声"
    assert phone_in["actor"].startswith("operator:")
    # In the queue, marked as a phone-in.
    queue = (await http.get("/api/alerts", headers=t01)).json()
    assert [a["source"] for a in queue if a["id"] == alert["id"]] == ["phone_in"]
    async with region.sessions() as session:
        audited = (
            (await session.execute(select(AuditLog).where(col(AuditLog.action) == "phone_in")))
            .scalars()
            .all()
        )
    assert [(a.target_type, a.target_id) for a in audited] == [("alert", str(alert["id"]))]
    assert audited[0].detail["caller"] == "neighbour" and audited[0].detail["joined"] is False


async def test_a_phone_in_for_an_elder_in_an_open_alert_joins_it_and_says_so(
    http: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    t01 = await builders.operator_token(http, "t01")
    elder_id = await _elder_id(region, "T01")
    async with transaction(region.sessions) as session:
        elder = await session.get(Elder, elder_id)
        assert elder is not None
        sos = await builders.sos(session, elder.code, clock.now())
    clock.advance(timedelta(seconds=40))
    before = await _alert_count(region)
    body = {"elder_id": elder_id, "kind": "illness", "caller": "relative"}
    res = await http.post("/api/alerts", headers=t01, json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["joined"] is True and sos.code in out["message"] and "并入" in out["message"]
    assert out["alert"]["id"] == sos.id and out["alert"]["trigger_count"] == 2
    assert out["alert"]["source"] == "device"  # it came from the button; the call joined it
    assert await _alert_count(region) == before
    joined = [t for t in out["alert"]["timeline"] if t["action"] == "phone_in"]
    assert [t["detail"]["joined"] for t in joined] == [True]
    # A second call joins again: still one alert.
    again = await http.post("/api/alerts", headers=t01, json=body)
    assert again.status_code == 200 and again.json()["alert"]["trigger_count"] == 3
    assert await _alert_count(region) == before


async def test_a_caller_not_in_the_registry_is_raised_at_a_village_and_an_address(
    http: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await builders.operator_token(http, "t01")
    village = await builders.region_id(region, sorted(builders.village_codes(region, "T01"))[0])
    body = {
        "village_id": village,
        "address": "村口小卖部旁第二户",
        "kind": "other",
        "caller": "hotline",
        "caller_phone": "12349",
    }
    res = await http.post("/api/alerts", headers=t01, json=body)
    assert res.status_code == 201, res.text
    alert = res.json()["alert"]
    assert alert["source"] == "phone_in" and alert["kind"] == "sos" and alert["priority"] == 1
    assert alert["elder"] == "未登记来电人" and alert["attempts"]  # the ladder runs
    async with region.sessions() as session:
        elder = await session.get(Elder, alert["elder_id"])
    assert elder is not None and elder.address == "村口小卖部旁第二户"
    assert elder.village_id == village and elder.archived_at is not None
    # Out of the registry's lists (archived), so not counted as a registered elder.
    listed = (await http.get("/api/elders", headers=t01, params={"q": elder.code})).json()
    assert listed == []


async def test_another_townships_elder_or_village_is_not_there_and_a_viewer_cannot(
    http: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await builders.operator_token(http, "t01")
    theirs = await _elder_id(region, "T02")
    their_village = await builders.region_id(
        region, sorted(builders.village_codes(region, "T02"))[0]
    )
    before = await _alert_count(region)
    res = await http.post(
        "/api/alerts", headers=t01, json={"elder_id": theirs, "kind": "fall", "caller": "elder"}
    )
    assert res.status_code == 404
    body = {"village_id": their_village, "address": "某户", "kind": "fall", "caller": "other"}
    assert (await http.post("/api/alerts", headers=t01, json=body)).status_code == 404
    assert await _alert_count(region) == before


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "fall", "caller": "elder"},  # neither an elder nor a village
        {"elder_id": 1, "village_id": 1, "kind": "fall", "caller": "elder"},
        {"elder_id": 1, "kind": "flood", "caller": "elder"},
        {"elder_id": 1, "kind": "fall", "caller": "police"},
        {"elder_id": 1, "kind": "fall", "caller": "elder", "caller_phone": "call me"},
        {"elder_id": 1, "kind": "fall", "caller": "elder", "note": "x" * 501},
        {"elder_id": 2**31, "kind": "fall", "caller": "elder"},
    ],
)
async def test_bad_phone_ins_are_refused_and_nothing_is_raised(
    http: httpx.AsyncClient, region: Seeded, body: dict[str, object]
) -> None:
    county = await builders.operator_token(http, "county")
    before = await _alert_count(region)
    res = await http.post("/api/alerts", headers=county, json=body)
    assert res.status_code == 422, res.text
    assert await _alert_count(region) == before


async def test_a_village_without_an_address_is_refused(
    http: httpx.AsyncClient, region: Seeded
) -> None:
    county = await builders.operator_token(http, "county")
    village = await builders.region_id(region, sorted(builders.village_codes(region, "T01"))[0])
    body = {"village_id": village, "address": "  ", "kind": "fall", "caller": "other"}
    res = await http.post("/api/alerts", headers=county, json=body)
    assert res.status_code == 422 and "地址" in res.text


async def test_the_figures_split_by_source(http: httpx.AsyncClient, region: Seeded) -> None:
    county = await builders.operator_token(http, "county")
    elder_id = await _elder_id(region, "T01")
    body = {"elder_id": elder_id, "kind": "fall", "caller": "elder"}
    assert (await http.post("/api/alerts", headers=county, json=body)).status_code == 201
    async with transaction(region.sessions) as session:
        other = await session.get(Elder, await _elder_id(region, "T01", 1))
        assert other is not None
        await builders.sos(session, other.code, FakeClock().now())

    async def alerts(source: str | None) -> int:
        params = {"source": source} if source else {}
        rows = (await http.get("/api/figures", headers=county, params=params)).json()
        return sum(r["alerts"] for r in rows if r["level"] == "county")

    assert await alerts("phone_in") == 1
    assert await alerts("device") == 1
    assert await alerts(None) == 2
    bad = await http.get("/api/figures", headers=county, params={"source": "fax"})
    assert bad.status_code == 422
