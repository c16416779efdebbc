"""Removing elders, devices and regions over the API (CONTRACT §4's CRUD): an elder or a device
is archived (its history stays), a removed device can no longer publish or log in, an elder with
an open alert cannot be archived, and a region that still holds anything cannot be deleted.
Over HTTP against the served platform, devices over the real broker."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col
from typer.testing import CliRunner

from anxin.app import create_app
from anxin.models import AuditLog, Device, Elder, OperatorUser
from anxin.settings import Settings
from gateway.cli import devices_app
from tests.builders import login, region_id, sos_button_in, village_codes
from tests.support.broker import press
from tests.support.harness import RunningPlatform, Seeded, ServeApp


async def audited(sessions: Any, username: str, action: str) -> list[AuditLog]:
    async with sessions() as session:
        rows = await session.execute(
            select(AuditLog)
            .join(OperatorUser, col(OperatorUser.id) == col(AuditLog.operator_id))
            .where(col(OperatorUser.username) == username, col(AuditLog.action) == action)
        )
        return list(rows.scalars())


def exported_devices(database_url: str, folder: Path) -> set[str]:
    """The device logins `anxin devices export-mosquitto` writes."""
    passwd = folder / "passwd"
    result = CliRunner().invoke(
        devices_app,
        ["export-mosquitto", "--password-file", str(passwd), "--acl-file", str(folder / "acl")],
        env={**os.environ, "ANXIN_DATABASE_URL": database_url},
    )
    assert result.exit_code == 0, result.output
    return {line.split(":", 1)[0] for line in passwd.read_text().splitlines() if line}


async def test_a_removed_device_is_rejected_as_disabled_and_gets_no_broker_login(
    platform: RunningPlatform, region: Seeded, database_url: str, tmp_path: Path
) -> None:
    _, button = sos_button_in(region.plan, "T01")
    _, theirs = sos_button_in(region.plan, "T02")
    assert (await press(platform, button.device_id, "test"))["status"] == "accepted"
    assert button.device_id in await asyncio.to_thread(exported_devices, database_url, tmp_path)

    async with httpx.AsyncClient(base_url=platform.web_url) as http:
        t01 = await login(http, "t01", "anxin-t01")
        # Outside the township looks like not there, and changes nothing.
        assert (
            await http.delete(f"/api/devices/{theirs.device_id}", headers=t01)
        ).status_code == 404
        removed = await http.delete(f"/api/devices/{button.device_id}", headers=t01)
        assert removed.status_code == 200, removed.text
        assert removed.json()["enabled"] is False and removed.json()["archived_at"]

        listed = {d["id"] for d in (await http.get("/api/devices", headers=t01)).json()}
        assert button.device_id not in listed
        archived = (await http.get("/api/devices?archived=true", headers=t01)).json()
        assert [d["id"] for d in archived] == [button.device_id]
        # It cannot be switched back on by an edit: removed is for good.
        again = await http.put(
            f"/api/devices/{button.device_id}",
            headers=t01,
            json={"kind": "sos_button", "elder_id": removed.json()["elder_id"], "enabled": True},
        )
        assert again.status_code == 409

    ack = await press(platform, button.device_id)
    assert ack["status"] == "rejected" and ack["reason"] == "disabled_device"
    assert (await press(platform, theirs.device_id, "test"))["status"] == "accepted"
    logins = await asyncio.to_thread(exported_devices, database_url, tmp_path)
    assert button.device_id not in logins and theirs.device_id in logins
    rows = await audited(region.sessions, "t01", "archive_device")
    assert [r.target_id for r in rows] == [button.device_id]


async def test_an_elder_with_an_open_alert_is_not_archived_until_it_is_resolved(
    platform: RunningPlatform, region: Seeded
) -> None:
    elder, button = sos_button_in(region.plan, "T01")
    alert = (await press(platform, button.device_id))["alert_id"]
    async with platform.sessions() as session:
        elder_id = (
            await session.execute(select(col(Elder.id)).where(col(Elder.code) == elder.code))
        ).scalar_one()
        devices = list(
            (
                await session.execute(
                    select(col(Device.id)).where(col(Device.elder_id) == elder_id)
                )
            ).scalars()
        )

    async with httpx.AsyncClient(base_url=platform.web_url) as http:
        t01 = await login(http, "t01", "anxin-t01")
        refused = await http.delete(f"/api/elders/{elder_id}", headers=t01)
        assert refused.status_code == 409
        message = refused.json()["detail"]
        assert f"A{alert}" in message and "未结束的警报" in message and "open alert" in message
        # Refused means nothing changed: the button still raises (joins) the alert.
        assert (await press(platform, button.device_id))["alert_id"] == alert

        resolved = await http.post(
            f"/api/alerts/{alert}/resolve", headers=t01, json={"outcome": "false_alarm"}
        )
        assert resolved.status_code == 200, resolved.text
        archived = await http.delete(f"/api/elders/{elder_id}", headers=t01)
        assert archived.status_code == 200, archived.text
        assert archived.json()["archived_at"] and archived.json()["code"] == elder.code

        current = {e["id"] for e in (await http.get("/api/elders", headers=t01)).json()}
        assert elder_id not in current
        old = (await http.get("/api/elders?archived=true", headers=t01)).json()
        assert [e["id"] for e in old] == [elder_id]
        mine = {d["id"] for d in (await http.get("/api/devices", headers=t01)).json()}
        assert not mine & set(devices)
        points = (await http.get("/api/map", headers=t01)).json()["elders"]
        assert elder_id not in {p["id"] for p in points}
        # The history still names them.
        detail = (await http.get(f"/api/alerts/{alert}", headers=t01)).json()
        assert detail["elder"] == elder.name and detail["status"] == "resolved"

    # No new alert for an archived elder: every device of theirs is refused.
    for device_id in devices:
        ack = await press(platform, device_id)
        assert ack["status"] == "rejected" and ack["reason"] == "disabled_device"
    rows = await audited(region.sessions, "t01", "archive_elder")
    assert [r.target_id for r in rows] == [str(elder_id)]
    assert sorted(rows[0].detail["devices"]) == sorted(devices)


async def test_a_region_that_holds_anything_is_not_deleted_and_an_empty_one_is(
    region: Seeded, serve_app: ServeApp
) -> None:
    app = create_app(Settings(), region.sessions)
    township = await region_id(region, "T01")
    village = await region_id(region, sorted(village_codes(region, "T01"))[0])
    async with serve_app(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        admin = await login(http, "admin", "anxin-admin")
        t01 = await login(http, "t01", "anxin-t01")

        held = await http.delete(f"/api/regions/{township}", headers=admin)
        assert held.status_code == 409
        assert "下级区域" in held.json()["detail"] and "child regions" in held.json()["detail"]
        with_elders = await http.delete(f"/api/regions/{village}", headers=admin)
        assert with_elders.status_code == 409
        assert "老人" in with_elders.json()["detail"] and "elders" in with_elders.json()["detail"]

        body = {"code": "T01-V99", "name": "空村", "level": "village", "parent_id": township}
        created = await http.post("/api/regions", headers=admin, json=body)
        assert created.status_code == 201, created.text
        empty = created.json()["id"]
        # A township operator may not delete regions (as they may not edit them).
        assert (await http.delete(f"/api/regions/{empty}", headers=t01)).status_code == 403
        gone = await http.delete(f"/api/regions/{empty}", headers=admin)
        assert gone.status_code == 204, gone.text
        codes = {r["code"] for r in (await http.get("/api/regions", headers=admin)).json()}
        assert "T01-V99" not in codes and "T01" in codes
        assert (await http.delete(f"/api/regions/{empty}", headers=admin)).status_code == 404
    rows = await audited(region.sessions, "admin", "delete_region")
    assert [(r.target_id, r.detail["code"]) for r in rows] == [(str(empty), "T01-V99")]
