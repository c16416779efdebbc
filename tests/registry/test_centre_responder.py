"""A centre is reached through a duty responder with its phone: the same responder whether the
centre was made through the API or imported from the civil-affairs office's spreadsheet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from anxin.app import create_app
from anxin.settings import Settings
from device_sim.region.generate import COUNTY_CODE
from registry.apply import import_registry_file
from tests.support.harness import Seeded, ServeApp

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
# What an operator sees of a responder, beyond where it is and how it is called.
SAME = ("kind", "travel_mode", "setup_minutes", "on_duty", "lang", "village_id")


async def _log_in(http: httpx.AsyncClient) -> dict[str, str]:
    res = await http.post("/api/auth/token", data={"username": "admin", "password": "anxin-admin"})
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def _duty(responders: list[dict[str, Any]], phone: str) -> dict[str, Any]:
    [found] = [r for r in responders if r["phone"] == phone]
    return found


async def test_a_centre_made_through_the_api_and_one_imported_get_the_same_duty_responder(
    region: Seeded, serve_app: ServeApp
) -> None:
    regions_csv = (
        "区域编码,名称,级别,上级编码,纬度,经度\n"
        f"T98,白河镇,乡镇,{COUNTY_CODE},32.61,109.21\n"
        f"T97,石门镇,乡镇,{COUNTY_CODE},32.62,109.22\n"
    )
    centres_csv = "区域编码,中心名称,值班电话,纬度,经度\nT97,石门镇区域养老服务中心,+8609160000097,32.62,109.22\n"
    for name, text in (("区域.csv", regions_csv), ("服务中心.csv", centres_csv)):
        report = await import_registry_file(region.sessions, text.encode(), name, now=NOW)
        assert report.ok and report.committed, report.summary_lines()

    app = create_app(Settings(), region.sessions)
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        admin = await _log_in(http)
        regions = (await http.get("/api/regions", headers=admin)).json()
        township = next(r["id"] for r in regions if r["code"] == "T98")
        made = await http.post(
            "/api/centres",
            headers=admin,
            json={
                "region_id": township,
                "name": "白河镇区域养老服务中心",
                "duty_phone": "+8609160000098",
                "lat": 32.61,
                "lon": 109.21,
            },
        )
        assert made.status_code == 201, made.text
        responders = (await http.get("/api/responders", headers=admin)).json()

    through_api = _duty(responders, "+8609160000098")
    imported = _duty(responders, "+8609160000097")
    assert through_api["name"] == "白河镇区域养老服务中心值班"
    assert imported["name"] == "石门镇区域养老服务中心值班"
    assert {k: through_api[k] for k in SAME} == {k: imported[k] for k in SAME}
    assert through_api["kind"] == "township_centre" and through_api["travel_mode"] == "car"
