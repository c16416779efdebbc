"""The audit log cannot be read back, edited or deleted through the API: there is no audit
route, no route patches anything or deletes beyond the registry's three removals, and the rows
written as a side effect of an operator's action carry the server's own who, what and when,
whatever the request says."""

from __future__ import annotations

import json

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlmodel import col

from anxin.clock import FakeClock
from anxin.models import AuditLog, OperatorUser
from tests.builders import login, raise_sos
from tests.support.harness import Seeded
from tests.support.routes import app_routes

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
GUESSES = (
    "/api/audit",
    "/api/audit/1",
    "/api/audit-log",
    "/api/audit-log/1",
    "/api/audit_log",
    "/api/audit_log/1",
    "/api/audit-logs",
    "/api/audit-logs/1",
    "/api/audits/1",
    "/api/console/audit",
    "/audit",
    "/admin/audit",
)


async def audit_rows(region: Seeded) -> str:
    async with region.sessions() as session:
        rows = (await session.execute(select(AuditLog).order_by(col(AuditLog.id)))).scalars()
        return json.dumps([r.model_dump() for r in rows], default=str)


def test_no_route_touches_the_audit_log_and_none_deletes_or_patches(app: FastAPI) -> None:
    routes = app_routes(app)
    assert not [r for r in routes if "audit" in r[1].lower()]
    assert {method for method, _ in routes} <= {"GET", "POST", "PUT", "PATCH", "DELETE"}
    # The only partial edit: one elder's fields (a category, say), audited as PUT is.
    assert {path for method, path in routes if method == "PATCH"} == {"/api/elders/{elder_id}"}
    # The only removals: an empty region, and elders and devices (archived, not deleted).
    assert {path for method, path in routes if method == "DELETE"} == {
        "/api/regions/{region_id}",
        "/api/elders/{elder_id}",
        "/api/devices/{device_id}",
    }


async def test_every_method_on_every_audit_path_changes_nothing(
    client: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    await raise_sos(region, clock, "T01")
    admin = await login(client, "admin", "anxin-admin")
    before = await audit_rows(region)
    assert '"action": "login"' in before
    forged = {"action": "forged", "operator_id": 1, "detail": {}, "target_id": "1"}
    for path in GUESSES:
        for method in METHODS:
            res = await client.request(method, path, headers=admin, json=forged)
            assert res.status_code in (404, 405), (method, path, res.status_code)
    assert await audit_rows(region) == before


async def test_audit_rows_carry_the_servers_operator_and_time_not_the_requests(
    client: httpx.AsyncClient, region: Seeded, clock: FakeClock
) -> None:
    alert = await raise_sos(region, clock, "T01")
    t01 = await login(client, "t01", "anxin-t01")
    clock.advance(60)
    forged = {
        "outcome": "handled",
        "note": "核实",
        "action": "forged",
        "operator_id": 1,
        "at": "2000-01-01T00:00:00Z",
        "actor": "operator:admin",
    }
    res = await client.post(
        f"/api/alerts/{alert.id}/resolve",
        headers={**t01, "X-Operator": "admin", "X-Forwarded-User": "admin"},
        json=forged,
        params={"operator_id": 1, "action": "forged"},
    )
    assert res.status_code == 200, res.text
    async with region.sessions() as session:
        rows = (
            await session.execute(
                select(AuditLog, col(OperatorUser.username))
                .join(OperatorUser, col(OperatorUser.id) == col(AuditLog.operator_id))
                .where(col(AuditLog.target_id) == str(alert.id))
            )
        ).all()
    assert [(a.action, who, a.at) for a, who in rows] == [("resolve", "t01", clock.now())]
    assert "forged" not in await audit_rows(region)
