"""The console's API: registry CRUD with validation and scope, audit, login throttling,
reassigning an alert, dead letters, device health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert, AlertTimelineEntry, DispatchAttempt
from anxin import auth
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import transaction
from anxin.models import AuditLog, Elder, OperatorUser
from anxin.settings import Settings
from gateway.models import DeadLetter
from tests.builders import login, raise_sos, region_id, village_codes
from tests.support.harness import Seeded


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(region: Seeded, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(), region.sessions, clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        yield http


async def audit_actions(region: Seeded, username: str) -> list[tuple[str, str]]:
    async with region.sessions() as session:
        rows = await session.execute(
            select(col(AuditLog.action), col(AuditLog.target_id))
            .join(OperatorUser, col(OperatorUser.id) == col(AuditLog.operator_id))
            .where(col(OperatorUser.username) == username)
            .order_by(col(AuditLog.id))
        )
        return [(a, t) for a, t in rows]


ELDER = {
    "code": "E9001",
    "name": "张桂英",
    "address": "新村1组1号",
    "lat": 32.69,
    "lon": 109.14,
    "living_alone": True,
    "guardian_phones": ["+8613800000001"],
}


async def test_a_township_operator_sees_only_their_township_and_reading_an_elder_is_audited(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    elders = (await client.get("/api/elders", headers=t01)).json()
    mine = {e.code for e in region.plan.elders if e.village_code in village_codes(region, "T01")}
    assert {e["code"] for e in elders} == mine
    assert all(e["devices"] for e in elders)

    other = next(e for e in region.plan.elders if e.village_code in village_codes(region, "T02"))
    async with region.sessions() as session:
        other_id = (
            await session.execute(select(col(Elder.id)).where(col(Elder.code) == other.code))
        ).scalar_one()
    assert (await client.get(f"/api/elders/{other_id}", headers=t01)).status_code == 404

    record = (await client.get(f"/api/elders/{elders[0]['id']}", headers=t01)).json()
    assert record["guardian_phones"] and record["village"]
    assert ("read_elder", str(elders[0]["id"])) in await audit_actions(region, "t01")

    regions = (await client.get("/api/regions", headers=t01)).json()
    assert {r["code"] for r in regions} == {"T01", *village_codes(region, "T01")}
    responders = (await client.get("/api/responders", headers=t01)).json()
    assert responders and all(r["place"] for r in responders)
    assert all(r["kind"] != "county_centre" for r in responders)
    devices = (await client.get("/api/devices", headers=t01)).json()
    assert {d["elder"] for d in devices} <= {e["name"] for e in elders}
    assert (await client.get("/api/map", headers=t01)).json()["elders"]


async def test_elders_are_validated_and_kept_inside_the_operators_region(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    my_village = await region_id(region, sorted(village_codes(region, "T01"))[0])
    their_village = await region_id(region, sorted(village_codes(region, "T02"))[0])

    bad_phone = await client.post(
        "/api/elders",
        headers=t01,
        json={**ELDER, "village_id": my_village, "guardian_phones": ["13800000001"]},
    )
    assert bad_phone.status_code == 422
    assert "guardian_phones" in bad_phone.json()["detail"][0]["loc"]

    elsewhere = await client.post(
        "/api/elders", headers=t01, json={**ELDER, "village_id": their_village}
    )
    assert elsewhere.status_code == 422
    assert elsewhere.json()["detail"][0]["loc"] == ["body", "village_id"]

    created = await client.post(
        "/api/elders", headers=t01, json={**ELDER, "name": "  张桂英 ", "village_id": my_village}
    )
    assert created.status_code == 201, created.text
    elder = created.json()
    assert elder["name"] == "张桂英" and elder["living_alone"]

    duplicate = await client.post(
        "/api/elders", headers=t01, json={**ELDER, "village_id": my_village}
    )
    assert duplicate.status_code == 422
    assert duplicate.json()["detail"][0]["loc"] == ["body", "code"]

    changed = await client.put(
        f"/api/elders/{elder['id']}",
        headers=t01,
        json={**ELDER, "village_id": my_village, "wanders": True, "night_start": "21:30"},
    )
    assert changed.status_code == 200 and changed.json()["wanders"]
    bad_time = await client.put(
        f"/api/elders/{elder['id']}",
        headers=t01,
        json={**ELDER, "village_id": my_village, "night_end": "25:00"},
    )
    assert bad_time.status_code == 422
    actions = await audit_actions(region, "t01")
    assert ("create_elder", str(elder["id"])) in actions
    assert ("update_elder", str(elder["id"])) in actions


async def test_a_viewer_reads_but_cannot_change_or_act(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    async with transaction(region.sessions) as session:
        session.add(
            OperatorUser(
                username="v01",
                display_name="观察员",
                password_hash=auth.hash_password("viewer-pass"),
                role="viewer",
                region_id=await region_id(region, "T01"),
            )
        )
    viewer = await login(client, "v01", "viewer-pass")
    config = (await client.get("/api/console/config", headers=viewer)).json()
    assert config["can_act"] is False and config["timezone"] == "Asia/Shanghai"
    village = await region_id(region, sorted(village_codes(region, "T01"))[0])
    assert (await client.get("/api/elders", headers=viewer)).status_code == 200
    refused = await client.post(
        "/api/elders", headers=viewer, json={**ELDER, "village_id": village}
    )
    assert refused.status_code == 403
    assert (
        await client.post("/api/alerts/1/reassign", headers=viewer, json={"responder_id": 1})
    ).status_code == 403


async def test_devices_get_a_password_once_and_health_counts_them_per_township(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    elder = (await client.get("/api/elders", headers=t01)).json()[0]
    body = {"id": "sos-new-1", "kind": "sos_button", "elder_id": elder["id"]}
    created = await client.post("/api/devices", headers=t01, json=body)
    assert created.status_code == 201, created.text
    assert len(created.json()["password"]) >= 12
    listed = (await client.get(f"/api/devices?elder_id={elder['id']}", headers=t01)).json()
    assert "sos-new-1" in {d["id"] for d in listed}
    assert all(d["password"] is None for d in listed)

    assert (await client.post("/api/devices", headers=t01, json=body)).status_code == 422
    bad_id = await client.post("/api/devices", headers=t01, json={**body, "id": "sos new/1"})
    assert bad_id.status_code == 422
    disabled = await client.put(
        "/api/devices/sos-new-1",
        headers=t01,
        json={"kind": "sos_button", "elder_id": elder["id"], "enabled": False},
    )
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False

    health = (await client.get("/api/device-health", headers=t01)).json()
    assert [h["township"] for h in health] == [region.plan.townships[0].name]
    assert health[0]["disabled"] == 1
    assert health[0]["devices"] == health[0]["online"] + health[0]["offline"] + 1


async def test_regions_and_centres_are_for_county_operators_and_a_centre_gets_a_duty_responder(
    client: httpx.AsyncClient, region: Seeded
) -> None:
    t01 = await login(client, "t01", "anxin-t01")
    township = await region_id(region, "T01")
    new_village = {"code": "V99", "name": "新村", "level": "village", "parent_id": township}
    assert (await client.post("/api/regions", headers=t01, json=new_village)).status_code == 403

    admin = await login(client, "admin", "anxin-admin")
    created = await client.post("/api/regions", headers=admin, json=new_village)
    assert created.status_code == 201, created.text
    wrong_parent = await client.post(
        "/api/regions",
        headers=admin,
        json={**new_village, "code": "V98", "parent_id": created.json()["id"]},
    )
    assert wrong_parent.status_code == 422

    centre = {
        "region_id": township,
        "name": "青溪乡第二服务站",
        "duty_phone": "+8609160000099",
        "lat": 32.7,
        "lon": 109.1,
    }
    made = await client.post("/api/centres", headers=admin, json=centre)
    assert made.status_code == 201, made.text
    responders = (await client.get("/api/responders", headers=admin)).json()
    duty = [r for r in responders if r["phone"] == centre["duty_phone"]]
    assert len(duty) == 1 and duty[0]["kind"] == "township_centre"

    aide = {
        "name": "李红",
        "phone": centre["duty_phone"],
        "village_id": created.json()["id"],
        "lat": 32.7,
        "lon": 109.1,
    }
    taken = await client.post("/api/responders", headers=t01, json=aide)
    assert taken.status_code == 422 and taken.json()["detail"][0]["loc"] == ["body", "phone"]
    made_aide = await client.post(
        "/api/responders", headers=t01, json={**aide, "phone": "+8613900000077"}
    )
    assert made_aide.status_code == 201, made_aide.text
    off = await client.put(
        f"/api/responders/{made_aide.json()['id']}",
        headers=t01,
        json={**aide, "phone": "+8613900000077", "on_duty": False},
    )
    assert off.status_code == 200 and off.json()["on_duty"] is False


async def test_login_locks_after_five_failures_and_the_lock_expires(
    client: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    form = {"username": "t02", "password": "wrong"}
    for _ in range(5):
        assert (await client.post("/api/auth/token", data=form)).status_code == 401
    right = {"username": "t02", "password": "anxin-t02"}
    assert (await client.post("/api/auth/token", data=right)).status_code == 429
    unknown = await client.post("/api/auth/token", data={"username": "nobody", "password": "x"})
    assert unknown.status_code == 401
    clock.advance(timedelta(minutes=1, seconds=1))
    assert (await client.post("/api/auth/token", data=right)).status_code == 200
    async with region.sessions() as session:
        user = (
            await session.execute(select(OperatorUser).where(col(OperatorUser.username) == "t02"))
        ).scalar_one()
        assert user.failed_logins == 0 and user.locked_until is None
    actions = [a for a, _ in await audit_actions(region, "t02")]
    assert actions.count("login_failed") == 5 and actions[-1] == "login"


async def test_reassign_asks_the_chosen_responder_and_releases_an_earlier_taker(
    client: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    alert = await raise_sos(region, clock, "T01")
    t01 = await login(client, "t01", "anxin-t01")
    listed = (await client.get("/api/alerts?open_only=true", headers=t01)).json()
    assert listed[0]["asked"][0]["answer"] == "pending"
    first, second = alert.ranking[0]["responder_id"], alert.ranking[1]["responder_id"]

    accepted = await client.post(
        f"/api/alerts/{alert.id}/accept", headers=t01, json={"responder_id": first}
    )
    assert accepted.status_code == 200
    clock.advance(30)
    moved = await client.post(
        f"/api/alerts/{alert.id}/reassign", headers=t01, json={"responder_id": second}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "dispatching"
    async with region.sessions() as session:
        current = await session.get(Alert, alert.id)
        assert current is not None and current.accepted_by is None
        attempts = {
            a.responder_id: a.answer
            for a in (
                await session.execute(
                    select(DispatchAttempt).where(col(DispatchAttempt.alert_id) == alert.id)
                )
            ).scalars()
        }
        assert attempts[first] == "withdrawn" and attempts[second] == "pending"
        asked = (
            await session.execute(
                select(AlertTimelineEntry).where(
                    col(AlertTimelineEntry.alert_id) == alert.id,
                    col(AlertTimelineEntry.actor) == "operator:t01",
                    col(AlertTimelineEntry.action) == "asked",
                )
            )
        ).scalar_one()
        assert asked.detail["responder_id"] == second
    assert ("reassign", str(alert.id)) in await audit_actions(region, "t01")

    t02 = await login(client, "t02", "anxin-t02")
    hidden = await client.post(
        f"/api/alerts/{alert.id}/reassign", headers=t02, json={"responder_id": first}
    )
    assert hidden.status_code == 404


async def test_dead_letters_of_unknown_devices_are_for_the_county_only(
    client: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    t01_device = next(
        d.device_id
        for d in region.plan.devices
        if any(
            e.code == d.elder_code and e.village_code in village_codes(region, "T01")
            for e in region.plan.elders
        )
    )
    async with transaction(region.sessions) as session:
        for device_id in (t01_device, "ghost-1"):
            session.add(
                DeadLetter(
                    received_at=clock.now(),
                    topic=f"anxin/v1/dev/{device_id}/event",
                    device_id=device_id,
                    reason="invalid_json",
                    payload="{not json",
                )
            )
    t01 = await login(client, "t01", "anxin-t01")
    county = await login(client, "county", "anxin-county")
    assert [
        d["device_id"] for d in (await client.get("/api/dead-letters", headers=t01)).json()
    ] == [t01_device]
    seen = {d["device_id"] for d in (await client.get("/api/dead-letters", headers=county)).json()}
    assert seen == {t01_device, "ghost-1"}
