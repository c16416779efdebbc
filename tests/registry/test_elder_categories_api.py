"""The registry API carries every civil-affairs category of an elder: set on create, changed by
PUT, read back as flags and as the Chinese words (`categories`) a roster's 类别 cell uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.models import AuditLog, Elder
from anxin.settings import Settings
from tests.builders import login, region_id, village_codes
from tests.support.harness import Seeded


@pytest.fixture
async def client(region: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), region.sessions, FakeClock())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        yield http


ELDER = {
    "code": "E9101",
    "name": "王秀英",
    "lat": 32.69,
    "lon": 109.14,
    "extreme_poverty": True,
    "dementia": True,
    "living_alone": True,
}


async def test_categories_are_created_changed_and_read_back(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    village = await region_id(region, sorted(village_codes(region, "T01"))[0])

    created = await client.post("/api/elders", headers=t01, json={**ELDER, "village_id": village})
    assert created.status_code == 201, created.text
    elder = created.json()
    assert elder["categories"] == ["特困", "独居", "失智"]
    assert (elder["extreme_poverty"], elder["dementia"], elder["low_income"]) == (
        True,
        True,
        False,
    )

    changed = {
        **ELDER,
        "village_id": village,
        "extreme_poverty": False,
        "low_income": True,
        "semi_disabled": True,
        "severe_disability": True,
        "family_planning_special": True,
    }
    put = await client.put(f"/api/elders/{elder['id']}", headers=t01, json=changed)
    assert put.status_code == 200, put.text
    wanted = ["低保", "独居", "半失能", "失智", "重残", "计划生育特殊家庭"]
    assert put.json()["categories"] == wanted

    again = (await client.get(f"/api/elders/{elder['id']}", headers=t01)).json()
    assert again["categories"] == wanted and not again["extreme_poverty"]
    listed = (await client.get("/api/elders?q=E9101", headers=t01)).json()
    assert [e["categories"] for e in listed] == [wanted]

    async with region.sessions() as session:
        stored = await session.get(Elder, elder["id"])
        audit = (
            await session.execute(
                select(AuditLog).where(
                    col(AuditLog.action) == "update_elder",
                    col(AuditLog.target_id) == str(elder["id"]),
                )
            )
        ).scalar_one()
    assert stored is not None
    assert (stored.low_income, stored.semi_disabled, stored.extreme_poverty) == (True, True, False)
    assert set(audit.detail["changed"]) == {
        "extreme_poverty",
        "low_income",
        "semi_disabled",
        "severe_disability",
        "family_planning_special",
    }


async def test_a_category_flag_must_be_yes_or_no(client: httpx.AsyncClient, region: Seeded) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    village = await region_id(region, sorted(village_codes(region, "T01"))[0])
    bad = await client.post(
        "/api/elders", headers=t01, json={**ELDER, "village_id": village, "dementia": "maybe"}
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "dementia"]


async def test_the_list_filters_by_category(client: httpx.AsyncClient, region: Seeded) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    village = await region_id(region, sorted(village_codes(region, "T01"))[0])
    created = await client.post("/api/elders", headers=t01, json={**ELDER, "village_id": village})
    assert created.status_code == 201, created.text

    everyone = (await client.get("/api/elders", headers=t01)).json()
    with_dementia = {e["code"] for e in everyone if e["dementia"]}
    assert "E9101" in with_dementia and len(with_dementia) < len(everyone)
    for category in ("dementia", "失智"):
        only = (await client.get(f"/api/elders?category={category}", headers=t01)).json()
        assert {e["code"] for e in only} == with_dementia
    alone = (await client.get("/api/elders?category=独居", headers=t01)).json()
    assert {e["code"] for e in alone} == {e["code"] for e in everyone if e["living_alone"]}
    assert "E9101" in {e["code"] for e in alone} and len(alone) < len(everyone)

    unknown = await client.get("/api/elders?category=退役军人", headers=t01)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["query", "category"]


async def test_patch_changes_one_category_and_keeps_the_rest(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    village = await region_id(region, sorted(village_codes(region, "T01"))[0])
    elder = (
        await client.post("/api/elders", headers=t01, json={**ELDER, "village_id": village})
    ).json()

    patched = await client.patch(
        f"/api/elders/{elder['id']}", headers=t01, json={"severe_disability": True}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["categories"] == ["特困", "独居", "失智", "重残"]
    assert {k: patched.json()[k] for k in ("name", "lat", "village_id")} == {
        "name": "王秀英",
        "lat": 32.69,
        "village_id": village,
    }

    for body, field in (
        ({"dementia": "maybe"}, "dementia"),
        ({"demented": True}, "demented"),
        ({"night_start": "25:00"}, "night_start"),
    ):
        bad = await client.patch(f"/api/elders/{elder['id']}", headers=t01, json=body)
        assert bad.status_code == 422, body
        assert bad.json()["detail"][0]["loc"] == ["body", field]
    again = (await client.get(f"/api/elders/{elder['id']}", headers=t01)).json()
    assert again["categories"] == ["特困", "独居", "失智", "重残"]
    assert again["night_start"] == "22:00"
