"""Every list an operator reads is on the record (PIPL: a read of personal data is audited), like
single reads: one audit row per request, with what was listed, the filters and how many rows.
Every GET route of the API without a path parameter is probed, so a new list route that forgets
its audit row fails here. Over HTTP against the served app."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from anxin.clock import FakeClock
from anxin.models import AuditLog, OperatorUser
from tests.builders import login, two_townships
from tests.support.harness import Seeded, ServeApp
from tests.support.routes import NOT_OPERATOR_DATA, app_routes

# GET routes without a path parameter that list nothing personal.
NOT_A_LIST = {"/api/console/config"}  # the operator's own name and permissions
# Each list, read with filters where it has them; what its audit row says it listed.
READS = {
    "/api/alerts?priority=1&open_only=true": ("list_alerts", "alert"),
    "/api/elders?q=张&limit=50": ("list_elders", "elder"),
    "/api/devices?trouble_only=false&limit=100": ("list_devices", "device"),
    "/api/responders": ("list_responders", "responder"),
    "/api/dead-letters?limit=50": ("list_dead_letters", "dead_letter"),
    "/api/regions": ("list_regions", "region"),
    "/api/centres": ("list_centres", "centre"),
    "/api/device-health": ("list_device_health", "device"),
    "/api/map": ("read_map", "elder"),
    "/api/figures": ("read_figures", "figures"),
    "/api/figures/coverage": ("read_figures", "figures"),
    "/api/figures/visits": ("read_visit_figures", "figures"),
    "/api/figures/visits.xlsx": ("read_visit_figures", "figures"),
    "/api/visits/overdue": ("list_overdue_visits", "visit"),
}
# Figures are counted per region, not per row listed (the .xlsx is a file, not JSON).
FIGURES = {"read_figures", "read_visit_figures"}
FILTERS = {
    "list_alerts": {"priority": 1, "open_only": True},
    "list_elders": {"q": "张"},
    "list_devices": {},
    "list_dead_letters": {"limit": 50},
}


async def audit_rows(region: Seeded, username: str) -> list[AuditLog]:
    async with region.sessions() as session:
        rows = await session.execute(
            select(AuditLog)
            .join(OperatorUser, col(OperatorUser.id) == col(AuditLog.operator_id))
            .where(col(OperatorUser.username) == username)
            .order_by(col(AuditLog.id))
        )
        return list(rows.scalars())


async def test_every_list_read_writes_one_audit_row_with_its_filters_and_count(
    app: FastAPI, region: Seeded, clock: FakeClock, serve_app: ServeApp
) -> None:
    await two_townships(region, clock)
    lists = (
        {
            path
            for method, path in app_routes(app)
            if method == "GET" and "{" not in path and path.startswith("/api/")
        }
        - {p for _, p in NOT_OPERATOR_DATA}
        - NOT_A_LIST
    )
    assert {p.partition("?")[0] for p in READS} | {"/api/alerts-stream"} == lists, (
        "a list route without a probe here"
    )
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        t01 = await login(http, "t01", "anxin-t01")
        for path, (action, target) in READS.items():
            before = len(await audit_rows(region, "t01"))
            res = await http.get(path, headers=t01)
            assert res.status_code == 200, (path, res.text)
            new = (await audit_rows(region, "t01"))[before:]
            assert [(r.action, r.target_type) for r in new] == [(action, target)], path
            if action not in FIGURES:
                listed = res.json()
                count = len(listed["elders"]) if action == "read_map" else len(listed)
                assert new[0].detail["count"] == count, path
            if action in FILTERS:
                assert new[0].detail["filters"] == FILTERS[action], path

        # The live queue: one row when the stream opens.
        before = len(await audit_rows(region, "t01"))
        token = t01["Authorization"].removeprefix("Bearer ")
        async with http.stream("GET", f"/api/alerts-stream?token={token}") as res:
            assert res.status_code == 200
            async for line in res.aiter_lines():
                if line.startswith("data: "):
                    break
        new = (await audit_rows(region, "t01"))[before:]
        assert [(r.action, r.detail) for r in new] == [("list_alerts", {"stream": True})]
