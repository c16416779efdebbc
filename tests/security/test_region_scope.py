"""An operator cannot read or act outside their region through ANY route.

Every route of the app (enumerated from app.routes) has a probe here, or is listed as carrying
no operator data; a new route without either fails the test. Each probe uses the township
operator t01 with ids of T02 (for the county-level routes: a second county's operator with the
demo county's ids), and at the end nothing of T02 has changed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import DispatchAttempt
from anxin.clock import FakeClock
from anxin.models import Elder, Region
from tests.builders import login, second_county, snapshot, two_townships
from tests.support.harness import Seeded, ServeApp
from tests.support.routes import NOT_OPERATOR_DATA, app_routes

ELDER = {"code": "E9901", "name": "王秀兰", "lat": 32.69, "lon": 109.14}
AIDE = {"name": "赵敏", "phone": "+8613900009901", "lat": 32.7, "lon": 109.1}


async def elder_body(http: httpx.AsyncClient, auth: dict[str, str], elder_id: int) -> Any:
    got = (await http.get(f"/api/elders/{elder_id}", headers=auth)).json()
    return {k: v for k, v in got.items() if k not in ("id", "village", "devices", "open_alerts")}


async def responder_body(http: httpx.AsyncClient, auth: dict[str, str], rid: int) -> Any:
    found = [r for r in (await http.get("/api/responders", headers=auth)).json() if r["id"] == rid]
    assert found
    keep = ("kind", "name", "phone", "village_id", "centre_id", "lat", "lon", "on_duty")
    return {k: found[0][k] for k in keep}


async def test_a_township_operator_reaches_nothing_outside_their_township_through_any_route(
    app: FastAPI, client: httpx.AsyncClient, region: Seeded, clock: FakeClock, serve_app: ServeApp
) -> None:
    mine, theirs = await two_townships(region, clock)
    await second_county(region)
    before = await snapshot(region, theirs)
    t01 = await login(client, "t01", "anxin-t01")
    c2 = await login(client, "c2", "anxin-c2")
    http = client

    async def status(method: str, path: str, who: dict[str, str], **kw: Any) -> int:
        return (await http.request(method, path, headers=who, **kw)).status_code

    async def ids(path: str, who: dict[str, str] = t01, key: str = "id") -> set[Any]:
        res = await http.get(path, headers=who)
        assert res.status_code == 200, (path, res.text)
        return {row[key] for row in res.json()}

    async def alerts() -> None:
        assert await ids("/api/alerts") <= mine.alerts and mine.alert in await ids("/api/alerts")
        for region in (theirs.id, theirs.village):
            assert await ids(f"/api/alerts?region={region}") == set()

    async def one_alert() -> None:
        assert await status("GET", f"/api/alerts/{theirs.alert}", t01) == 404
        assert await status("GET", f"/api/alerts/{mine.alert}", t01) == 200

    async def accept() -> None:
        path = f"/api/alerts/{theirs.alert}/accept"
        assert await status("POST", path, t01, json={"responder_id": mine.aide}) == 404
        # My alert, their aide: as if no such aide.
        path = f"/api/alerts/{mine.alert}/accept"
        assert await status("POST", path, t01, json={"responder_id": theirs.aide}) == 422

    async def on_scene() -> None:
        assert await status("POST", f"/api/alerts/{theirs.alert}/on-scene", t01) == 404

    async def resolve() -> None:
        body = {"outcome": "false_alarm", "note": "不是我们的"}
        assert await status("POST", f"/api/alerts/{theirs.alert}/resolve", t01, json=body) == 404

    async def reassign() -> None:
        path = f"/api/alerts/{theirs.alert}/reassign"
        assert await status("POST", path, t01, json={"responder_id": mine.aide}) == 404
        path = f"/api/alerts/{mine.alert}/reassign"
        assert await status("POST", path, t01, json={"responder_id": theirs.aide}) == 409
        async with region.sessions() as session:
            asked = await session.scalar(
                select(func.count()).where(col(DispatchAttempt.responder_id) == theirs.aide)
            )
        assert asked == 0, "a T01 operator had a T02 aide asked"
        # The ladder's own candidates stay allowed: the county centre is above T01's region.
        ranking = (await http.get(f"/api/alerts/{mine.alert}", headers=t01)).json()["ranking"]
        county = next(c["responder_id"] for c in ranking if c["kind"] == "county_centre")
        assert county not in mine.responders
        assert await status("POST", path, t01, json={"responder_id": county}) == 200

    async def figures() -> None:
        assert await ids("/api/figures", key="region_id") <= mine.region_ids

    async def coverage() -> None:
        res = await http.get("/api/figures/coverage", params={"all": "true"}, headers=t01)
        body = res.json()
        assert body["reach"] and {e["village_id"] for e in body["reach"]} <= mine.region_ids
        assert {v["village_id"] for v in body["villages_without_aide"]} <= mine.region_ids

    async def stream() -> None:
        async with serve_app(app) as base, httpx.AsyncClient(base_url=base) as live:
            token = t01["Authorization"].removeprefix("Bearer ")
            async with live.stream("GET", f"/api/alerts-stream?token={token}") as res:
                assert res.status_code == 200
                async for line in res.aiter_lines():
                    if line.startswith("data: "):
                        seen = {a["id"] for a in json.loads(line[6:])}
                        break
        assert seen and seen <= mine.alerts

    async def regions() -> None:
        assert await ids("/api/regions") == mine.region_ids
        assert not (await ids("/api/regions", c2)) & (mine.region_ids | theirs.region_ids)

    async def create_region() -> None:
        body = {"code": "V901", "name": "外村", "level": "village", "parent_id": theirs.id}
        assert await status("POST", "/api/regions", t01, json=body) == 403
        assert await status("POST", "/api/regions", c2, json=body) == 422

    async def update_region() -> None:
        body = {"code": "V902", "name": "改名", "level": "village", "parent_id": theirs.id}
        assert await status("PUT", f"/api/regions/{theirs.village}", t01, json=body) == 403
        assert await status("PUT", f"/api/regions/{theirs.village}", c2, json=body) == 404

    async def read_ladder() -> None:
        assert await status("GET", f"/api/regions/{theirs.village}/ladder", t01) == 404
        assert await status("GET", f"/api/regions/{theirs.village}/ladder", c2) == 404

    async def change_ladder() -> None:
        body = {"accept_timeout_s": 60}
        assert await status("PUT", f"/api/regions/{theirs.village}/ladder", t01, json=body) == 404
        assert await status("PUT", f"/api/regions/{theirs.village}/ladder", c2, json=body) == 404

    async def read_travel_speeds() -> None:
        path = f"/api/regions/{theirs.village}/travel-speeds"
        assert await status("GET", path, t01) == 404
        assert await status("GET", path, c2) == 404

    async def change_travel_speeds() -> None:
        path = f"/api/regions/{theirs.village}/travel-speeds"
        assert await status("PUT", path, t01, json={"horseback": 6}) == 404
        assert await status("PUT", path, c2, json={"horseback": 6}) == 404

    async def centres() -> None:
        assert await ids("/api/centres") == mine.centres

    async def create_centre() -> None:
        body = {
            "region_id": theirs.id,
            "name": "外站",
            "duty_phone": "+8609160009901",
            "lat": 32.7,
            "lon": 109.1,
        }
        assert await status("POST", "/api/centres", t01, json=body) == 403
        assert await status("POST", "/api/centres", c2, json=body) == 422

    async def update_centre() -> None:
        body = {
            "region_id": theirs.id,
            "name": "改名",
            "duty_phone": "+8609160009902",
            "lat": 32.7,
            "lon": 109.1,
        }
        assert await status("PUT", f"/api/centres/{theirs.centre}", c2, json=body) == 404

    async def elders() -> None:
        assert await ids("/api/elders") == mine.elders
        assert await ids(f"/api/elders?village_id={theirs.village}") == set()

    async def create_elder() -> None:
        body = {**ELDER, "village_id": theirs.village}
        assert await status("POST", "/api/elders", t01, json=body) == 422

    async def one_elder() -> None:
        assert await status("GET", f"/api/elders/{theirs.elder}", t01) == 404

    async def update_elder() -> None:
        body = {**ELDER, "village_id": mine.village}
        assert await status("PUT", f"/api/elders/{theirs.elder}", t01, json=body) == 404
        moved = {**await elder_body(http, t01, mine.elder), "village_id": theirs.village}
        assert await status("PUT", f"/api/elders/{mine.elder}", t01, json=moved) == 422

    async def patch_elder() -> None:
        body = {"dementia": True}
        assert await status("PATCH", f"/api/elders/{theirs.elder}", t01, json=body) == 404
        moved = {"village_id": theirs.village}
        assert await status("PATCH", f"/api/elders/{mine.elder}", t01, json=moved) == 422

    async def devices() -> None:
        assert await ids("/api/devices") == mine.devices
        assert await ids(f"/api/devices?elder_id={theirs.elder}") == set()

    async def create_device() -> None:
        body = {"id": "sos-x-9901", "kind": "sos_button", "elder_id": theirs.elder}
        assert await status("POST", "/api/devices", t01, json=body) == 422

    async def update_device() -> None:
        body = {"kind": "sos_button", "elder_id": mine.elder, "enabled": False}
        assert await status("PUT", f"/api/devices/{theirs.device}", t01, json=body) == 404
        body = {"kind": "sos_button", "elder_id": theirs.elder}
        assert await status("PUT", f"/api/devices/{mine.device}", t01, json=body) == 422

    async def device_health() -> None:
        assert await ids("/api/device-health", key="township_id") == {mine.id}

    async def responders() -> None:
        assert await ids("/api/responders") == mine.responders

    async def create_responder() -> None:
        body = {**AIDE, "village_id": theirs.village}
        assert await status("POST", "/api/responders", t01, json=body) == 422
        body = {**AIDE, "kind": "township_centre", "centre_id": theirs.centre}
        assert await status("POST", "/api/responders", t01, json=body) == 422

    async def update_responder() -> None:
        body = {**AIDE, "village_id": mine.village}
        assert await status("PUT", f"/api/responders/{theirs.aide}", t01, json=body) == 404
        moved = {**await responder_body(http, t01, mine.aide), "village_id": theirs.village}
        assert await status("PUT", f"/api/responders/{mine.aide}", t01, json=moved) == 422

    async def dead_letters() -> None:
        assert theirs.device not in await ids("/api/dead-letters", key="device_id")

    async def map_points() -> None:
        res = (await http.get("/api/map", headers=t01)).json()
        assert {e["id"] for e in res["elders"]} == mine.elders
        assert {v["id"] for v in res["villages"]} <= mine.region_ids
        assert {r["id"] for r in res["responders"]} <= mine.responders
        assert {c["id"] for c in res["centres"]} == mine.centres

    async def delete_region() -> None:
        assert await status("DELETE", f"/api/regions/{theirs.village}", t01) == 403
        assert await status("DELETE", f"/api/regions/{theirs.village}", c2) == 404

    async def archive_elder() -> None:
        assert await status("DELETE", f"/api/elders/{theirs.elder}", t01) == 404

    async def archive_device() -> None:
        assert await status("DELETE", f"/api/devices/{theirs.device}", t01) == 404

    async def registry_import() -> None:
        async with region.sessions() as session:
            their_elder = await session.get(Elder, theirs.elder)
            my_elder = await session.get(Elder, mine.elder)
            my_village = await session.get(Region, mine.village)
            their_village = await session.get(Region, theirs.village)
            assert their_elder and my_elder and my_village and their_village
        files = {
            # Their elder moved into my village; a new elder in their village.
            "elders": "老人编号,姓名,村编码,纬度,经度\n"
            f"{their_elder.code},改名,{my_village.code},32.7,109.1\n"
            f"E9902,新人,{their_village.code},32.7,109.1\n",
            # Their device given to my elder.
            "devices": f"设备编号,设备类型,老人编号\n{theirs.device},一键呼叫,{my_elder.code}\n",
            # An aide in their village.
            "aides": f"姓名,手机号,村编码\n赵敏,+8613900009902,{their_village.code}\n",
        }
        for kind, text in files.items():
            res = await http.post(
                "/api/registry/import",
                headers=t01,
                params={"kind": kind},
                files={"file": (f"{kind}.csv", text.encode(), "text/csv")},
            )
            assert res.status_code == 200, res.text
            report = res.json()
            assert report["sheets"][0]["created"] == report["sheets"][0]["updated"] == 0
            assert report["refused"] and all(
                "not in your region" in f["message"] for f in report["refused"]
            ), report["refused"]

    async def visit_plan() -> None:
        assert await status("GET", f"/api/regions/{theirs.village}/visit-plan", t01) == 404
        assert await status("GET", f"/api/regions/{mine.village}/visit-plan", t01) == 200

    async def change_visit_plan() -> None:
        body = {"key_every": "week"}
        path = f"/api/regions/{theirs.village}/visit-plan"
        assert await status("PUT", path, t01, json=body) == 404
        assert await status("PUT", path, c2, json=body) == 404

    async def record_visit() -> None:
        body = {"mode": "phone", "note": "不是我们的"}
        path = f"/api/elders/{theirs.elder}/visits"
        assert await status("POST", path, t01, json=body) == 404

    async def major_change() -> None:
        body = {"note": "住院"}
        path = f"/api/elders/{theirs.elder}/major-change"
        assert await status("POST", path, t01, json=body) == 404

    async def visit_owner() -> None:
        path = f"/api/elders/{theirs.elder}/visit-owner"
        assert await status("PUT", path, t01, json={"responder_id": mine.aide}) == 404
        # My elder, their aide: refused as not an aide of the elder's village.
        path = f"/api/elders/{mine.elder}/visit-owner"
        assert await status("PUT", path, t01, json={"responder_id": theirs.aide}) == 422

    async def elder_visits() -> None:
        assert await status("GET", f"/api/elders/{theirs.elder}/visits", t01) == 404
        assert await status("GET", f"/api/elders/{mine.elder}/visits", t01) == 200

    async def elder_messages() -> None:
        assert await status("GET", f"/api/elders/{theirs.elder}/messages", t01) == 404
        assert await status("GET", f"/api/elders/{mine.elder}/messages", t01) == 200

    async def visit_figures() -> None:
        rows = (await http.get("/api/figures/visits", headers=t01)).json()
        assert rows and {r["region_id"] for r in rows} <= mine.region_ids
        res = await http.get("/api/figures/visits", params={"region": "T02"}, headers=t01)
        assert res.status_code == 404

    async def visit_figures_xlsx() -> None:
        res = await http.get("/api/figures/visits.xlsx", headers=t01)
        assert res.status_code == 200 and res.content[:2] == b"PK"
        res = await http.get("/api/figures/visits.xlsx", params={"region": "T02"}, headers=t01)
        assert res.status_code == 404

    async def phone_in() -> None:
        body = {"elder_id": theirs.elder, "kind": "fall", "caller": "neighbour"}
        assert await status("POST", "/api/alerts", t01, json=body) == 404
        body = {"village_id": theirs.village, "address": "某户", "kind": "fall", "caller": "other"}
        assert await status("POST", "/api/alerts", t01, json=body) == 404

    async def overdue_visits() -> None:
        listed = await ids("/api/visits/overdue", key="elder_id")
        assert listed and listed <= mine.elders and theirs.elder not in listed

    async def console_config() -> None:
        res = (await http.get("/api/console/config", headers=t01)).json()
        assert res["username"] == "t01" and res["can_edit_regions"] is False

    probes: dict[tuple[str, str], Callable[[], Awaitable[None]]] = {
        ("GET", "/api/alerts"): alerts,
        ("POST", "/api/alerts"): phone_in,
        ("GET", "/api/alerts/{alert_id}"): one_alert,
        ("POST", "/api/alerts/{alert_id}/accept"): accept,
        ("POST", "/api/alerts/{alert_id}/on-scene"): on_scene,
        ("POST", "/api/alerts/{alert_id}/resolve"): resolve,
        ("POST", "/api/alerts/{alert_id}/reassign"): reassign,
        ("GET", "/api/figures"): figures,
        ("GET", "/api/figures/coverage"): coverage,
        ("GET", "/api/regions/{region_id}/travel-speeds"): read_travel_speeds,
        ("PUT", "/api/regions/{region_id}/travel-speeds"): change_travel_speeds,
        ("GET", "/api/alerts-stream"): stream,
        ("GET", "/api/regions"): regions,
        ("POST", "/api/regions"): create_region,
        ("PUT", "/api/regions/{region_id}"): update_region,
        ("GET", "/api/regions/{region_id}/ladder"): read_ladder,
        ("PUT", "/api/regions/{region_id}/ladder"): change_ladder,
        ("GET", "/api/centres"): centres,
        ("POST", "/api/centres"): create_centre,
        ("PUT", "/api/centres/{centre_id}"): update_centre,
        ("GET", "/api/elders"): elders,
        ("POST", "/api/elders"): create_elder,
        ("GET", "/api/elders/{elder_id}"): one_elder,
        ("PUT", "/api/elders/{elder_id}"): update_elder,
        ("PATCH", "/api/elders/{elder_id}"): patch_elder,
        ("GET", "/api/devices"): devices,
        ("POST", "/api/devices"): create_device,
        ("PUT", "/api/devices/{device_id}"): update_device,
        ("GET", "/api/device-health"): device_health,
        ("GET", "/api/responders"): responders,
        ("POST", "/api/responders"): create_responder,
        ("PUT", "/api/responders/{responder_id}"): update_responder,
        ("GET", "/api/dead-letters"): dead_letters,
        ("GET", "/api/map"): map_points,
        ("GET", "/api/console/config"): console_config,
        ("GET", "/api/regions/{region_id}/visit-plan"): visit_plan,
        ("PUT", "/api/regions/{region_id}/visit-plan"): change_visit_plan,
        ("POST", "/api/elders/{elder_id}/visits"): record_visit,
        ("POST", "/api/elders/{elder_id}/major-change"): major_change,
        ("GET", "/api/elders/{elder_id}/visits"): elder_visits,
        ("PUT", "/api/elders/{elder_id}/visit-owner"): visit_owner,
        ("GET", "/api/elders/{elder_id}/messages"): elder_messages,
        ("GET", "/api/figures/visits"): visit_figures,
        ("GET", "/api/figures/visits.xlsx"): visit_figures_xlsx,
        ("GET", "/api/visits/overdue"): overdue_visits,
        ("DELETE", "/api/regions/{region_id}"): delete_region,
        ("DELETE", "/api/elders/{elder_id}"): archive_elder,
        ("DELETE", "/api/devices/{device_id}"): archive_device,
        ("POST", "/api/registry/import"): registry_import,
    }
    routes = app_routes(app)
    assert routes == set(probes) | NOT_OPERATOR_DATA, (
        "routes without a scope probe: "
        f"{sorted(routes - set(probes) - NOT_OPERATOR_DATA)}; "
        f"probes of no route: {sorted(set(probes) - routes)}"
    )
    failed: list[str] = []
    for (method, path), probe in probes.items():
        try:
            await asyncio.wait_for(probe(), timeout=60)
        except AssertionError as exc:
            failed.append(f"{method} {path}: {exc}")
    assert not failed, "\n".join(failed)
    assert await snapshot(region, theirs) == before, "something of T02 changed"
