"""Compliance figures: the pure tally, the query behind it, and GET /api/figures per operator."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr
from rich.cells import cell_len
from sqlalchemy import select
from sqlmodel import col

from alert_service import figures
from alert_service import ladder as alert_ladder
from alert_service.figures import AlertFacts
from anxin.app import create_app
from anxin.clock import FakeClock
from anxin.db import SessionMaker, transaction
from anxin.logging import configure_logging
from anxin.models import Elder, OperatorUser, Region
from anxin.settings import Settings
from tests.builders import TZ, Home, act, alert, event, home, tick_at
from tests.support.harness import Seeded

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def fact(**changes: object) -> AlertFacts:
    base: dict[str, object] = {
        "township_id": 2,
        "county_id": 1,
        "priority": 1,
        "raised_at": T0,
        "clock_started_at": T0,
        "respond_by": minutes(15),
        "accepted_at": None,
        "on_scene_at": None,
        "resolved_at": None,
        "breached": False,
        "outcome": None,
        "device_kind": "sos_button",
    }
    base.update(changes)
    return AlertFacts(**base)  # type: ignore[arg-type]


def test_percentile_is_nearest_rank() -> None:
    assert figures.percentile([], 0.5) is None
    assert figures.percentile([30.0], 0.9) == 30.0
    assert figures.percentile([10.0, 20.0, 30.0, 40.0], 0.5) == 20.0
    assert figures.percentile([float(s) for s in range(1, 11)], 0.9) == 9.0


def test_month_bounds_are_local_months() -> None:
    start, end = figures.month_bounds("2026-12", "Asia/Shanghai")
    assert start.astimezone(UTC) == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
    # 1 December 06:00 in Shanghai is still 30 November in UTC: it counts for December.
    assert figures.month_of(datetime(2026, 11, 30, 22, 0, tzinfo=UTC), TZ) == "2026-12"


def test_figures_per_township_and_county_and_month() -> None:
    now = minutes(60)
    facts = [
        # on scene at 6:00 after an accept at 1:00: met
        fact(accepted_at=minutes(1), on_scene_at=minutes(6), resolved_at=minutes(20)),
        # accepted at 3:00, on scene at 16:00: a breach
        fact(accepted_at=minutes(3), on_scene_at=minutes(16), breached=True),
        # nobody came, still open past the deadline: a breach
        fact(priority=2, device_kind="bed_sensor"),
        # a false alarm from a bed sensor, verified by phone at 4:00 (meets the rule)
        fact(
            township_id=3,
            device_kind="bed_sensor",
            on_scene_at=minutes(4),
            resolved_at=minutes(4),
            outcome="false_alarm",
        ),
        # device trouble: counted, not part of the 15-minute rule
        fact(priority=3, respond_by=None, clock_started_at=None, device_kind="hub"),
        # still running (raised 5 minutes ago): not decided yet
        fact(raised_at=minutes(55), clock_started_at=minutes(55), respond_by=minutes(70)),
    ]
    by_region = {f.region_id: f for f in figures.compliance_figures(facts, TZ, now)}
    county, township, other = by_region[1], by_region[2], by_region[3]
    assert (county.alerts, county.urgent, county.decided) == (6, 5, 4)
    assert (county.on_scene_in_time, county.breaches) == (2, 2)
    assert county.on_scene_in_time_share == pytest.approx(0.5)
    assert (county.accept_p50_s, county.accept_p90_s) == (60.0, 180.0)
    assert (county.on_scene_p50_s, county.on_scene_p90_s) == (360.0, 960.0)
    assert county.false_alarms_by_device_kind == {"bed_sensor": 1}
    assert county.month == "2026-11"
    assert (township.urgent, township.decided, township.on_scene_in_time) == (4, 3, 1)
    assert township.breaches == 2
    assert (other.alerts, other.on_scene_in_time_share, other.breaches) == (1, 1.0, 0)


def test_figures_split_by_month() -> None:
    december = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    facts = [
        fact(on_scene_at=minutes(5)),
        fact(
            raised_at=december,
            clock_started_at=december,
            respond_by=december + timedelta(minutes=15),
        ),
    ]
    rows = figures.compliance_figures(facts, TZ, december + timedelta(hours=1))
    assert [(r.region_id, r.month, r.on_scene_in_time, r.breaches) for r in rows] == [
        (1, "2026-11", 1, 0),
        (2, "2026-11", 1, 0),
        (1, "2026-12", 0, 1),
        (2, "2026-12", 0, 1),
    ]


async def _elders_in_two_townships(sessions: SessionMaker) -> tuple[list[Home], list[Home]]:
    first: list[Home] = []
    second: list[Home] = []
    async with sessions() as session:
        villages: dict[int, int] = {
            i: p
            for i, p in await session.execute(select(col(Region.id), col(Region.parent_id)))
            if i is not None and p is not None
        }
        elders = (await session.execute(select(Elder).order_by(col(Elder.id)))).scalars().all()
    townships = sorted({villages[e.village_id] for e in elders})
    for index, elder in enumerate(elders):
        township = villages[elder.village_id]
        bucket = first if township == townships[0] else second if township == townships[1] else None
        if bucket is not None and len(bucket) < 2:
            bucket.append(await home(sessions, index=index))
    return first, second


async def test_figures_from_the_database_and_the_api_scoped_per_operator(
    region: Seeded,
) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    (a, b), (c, _) = await _elders_in_two_townships(sessions)
    met_id = await event(sessions, a, "sos", T0)
    late_id = await event(sessions, b, "sos", T0)
    fall_id = await event(sessions, c, "fall", T0, device_kind="bed_sensor")
    assert met_id is not None and late_id is not None and fall_id is not None
    taker = (await alert(sessions, met_id)).ranking[0]["responder_id"]
    await act(sessions, met_id, "accept", taker, minutes(1))
    await act(sessions, met_id, "on_scene", taker, minutes(6))
    fall_taker = (await alert(sessions, fall_id)).ranking[0]["responder_id"]
    await act(sessions, fall_id, "accept", fall_taker, minutes(2))
    await act(sessions, fall_id, "on_scene", fall_taker, minutes(10))
    async with transaction(sessions) as session:
        locked = await alert_ladder.lock_alert(session, fall_id)
        assert locked is not None
        await alert_ladder.resolve(
            session, locked, minutes(12), actor="operator:t", outcome="false_alarm"
        )
    await tick_at(sessions, clock, minutes(15))  # the second one is breached
    assert (await alert(sessions, late_id)).breached

    township_a = (await alert(sessions, met_id)).township_id
    county_id = (await alert(sessions, met_id)).county_id
    clock.set(minutes(60))
    settings = Settings(database_url=SecretStr("postgresql://unused"), timezone=TZ)
    app = create_app(settings, sessions, clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://anxin"
    ) as http:

        async def figures_for(
            username: str, password: str, **params: str
        ) -> list[dict[str, object]]:
            token = (
                await http.post(
                    "/api/auth/token", data={"username": username, "password": password}
                )
            ).json()["access_token"]
            response = await http.get(
                "/api/figures", params=params, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200, response.text
            rows: list[dict[str, object]] = response.json()
            return rows

        county_rows = await figures_for("admin", "anxin-admin", month_from="2026-11")
        by_region = {r["region_id"]: r for r in county_rows}
        county = by_region[county_id]
        assert county["level"] == "county" and county["month"] == "2026-11"
        assert (county["urgent"], county["on_scene_in_time"], county["breaches"]) == (3, 2, 1)
        assert county["accept_p50_s"] == 60.0 and county["accept_p90_s"] == 120.0
        assert county["on_scene_p50_s"] == 360.0 and county["on_scene_p90_s"] == 600.0
        assert county["false_alarms_by_device_kind"] == {"bed_sensor": 1}
        assert by_region[township_a]["urgent"] == 2

        # A township operator sees their own township only.
        async with sessions() as session:
            operator = (
                (
                    await session.execute(
                        select(OperatorUser).where(col(OperatorUser.region_id) == township_a)
                    )
                )
                .scalars()
                .first()
            )
        assert operator is not None
        own = await figures_for(operator.username, f"anxin-{operator.username}")
        assert [r["region_id"] for r in own] == [township_a]
        assert (own[0]["on_scene_in_time"], own[0]["breaches"]) == (1, 1)

        # Another month has nothing; a bad month is refused.
        assert (
            await figures_for("admin", "anxin-admin", month_from="2026-10", month_to="2026-10")
            == []
        )
        token = (
            await http.post(
                "/api/auth/token", data={"username": "admin", "password": "anxin-admin"}
            )
        ).json()["access_token"]
        bad = await http.get(
            "/api/figures",
            params={"month_from": "2026-13"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert bad.status_code == 422
        assert (await http.get("/api/figures")).status_code == 401


async def test_figures_on_the_command_line(
    region: Seeded, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from alert_service.cli import figures_app

    # Nobody came for this SOS (raised at T0, long past its deadline by now).
    assert await event(region.sessions, await home(region.sessions), "sos", T0) is not None
    monkeypatch.setenv("ANXIN_DATABASE_URL", database_url)
    monkeypatch.setenv("ANXIN_LOG_LEVEL", "warning")
    runner = CliRunner()
    try:
        result = await asyncio.to_thread(
            runner.invoke, figures_app, ["show", "--month-from", "2026-11", "--json"]
        )
        table = await asyncio.to_thread(
            runner.invoke, figures_app, ["show", "--month-from", "2026-11"]
        )
    finally:
        # The command configured logging onto the runner's captured (now closed) stderr.
        configure_logging("warning")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    county_id = (await alert(region.sessions, 1)).county_id
    county = next(r for r in rows if r["region_id"] == county_id)
    assert (county["month"], county["urgent"], county["on_scene_in_time"]) == ("2026-11", 1, 0)
    assert county["breaches"] == 1
    assert table.exit_code == 0, table.output
    assert "15分钟应急响应达标情况" in table.output and "2026-11" in table.output


async def test_figures_table_speaks_chinese_and_fits_80_columns(
    region: Seeded, database_url: str
) -> None:
    """`anxin figures show` as an operator runs it in an 80-column terminal: Chinese headers,
    every figure whole (no cell cut off with …), no line wider than the terminal."""
    sessions = region.sessions
    home_ = await home(sessions)
    assert await event(sessions, home_, "sos", T0) is not None
    fall_id = await event(sessions, home_, "fall", minutes(120), device_kind="bed_sensor")
    assert fall_id is not None
    async with transaction(sessions) as session:
        locked = await alert_ladder.lock_alert(session, fall_id)
        assert locked is not None
        await alert_ladder.resolve(
            session, locked, minutes(125), actor="operator:t", outcome="false_alarm"
        )

    async def show(**env: str) -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "anxin.cli",
            "figures",
            "show",
            "--month-from",
            "2026-11",
            env={**os.environ, "ANXIN_DATABASE_URL": database_url, "COLUMNS": "80", **env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        return out.decode()

    chinese = await show()
    for header in ("月份", "地区", "紧急", "按时到场", "接单分钟", "到场分钟", "超时", "误报"):
        assert header in chinese, chinese
    assert "month" not in chinese and "breaches" not in chinese
    assert "0/2 0.0%" in chinese, chinese  # nobody came for the SOS; the false alarm decided
    assert "智能床垫 1" in chinese  # the false alarm, by device kind
    assert "…" not in chinese
    assert max(cell_len(line) for line in chinese.splitlines()) <= 80, chinese

    english = await show(ANXIN_LANGUAGE="en")  # the console's English mode, on request
    assert "month" in english and "on scene" in english and "月份" not in english
    assert "…" not in english
    assert max(cell_len(line) for line in english.splitlines()) <= 80, english
