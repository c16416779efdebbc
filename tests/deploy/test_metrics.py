"""/metrics as Prometheus scrapes it: the figures the operations dashboard shows, from the
database (open alerts, breaches, the oldest unsent SMS, overdue timers, compliance) and from
the process (messages, acks, dead letters)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert, AlertStatus
from anxin.broker import free_port
from anxin.clock import FakeClock
from anxin.db import SessionMaker, make_engine, make_sessionmaker, transaction
from anxin.metrics import (
    METRIC_NAMES,
    MetricsSettings,
    count_ack,
    count_dead_letter,
    metrics_router,
    publish,
    read_db_figures,
    refresh_db_gauges,
    run_role_metrics,
)
from anxin.models import Elder, pk
from dispatcher.models import SmsMessage
from tests.support.harness import Seeded

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def _scrape_app() -> str:
    app = FastAPI()
    app.include_router(metrics_router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://anxin"
    ) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def _seed_alerts(region: Seeded) -> None:
    async with transaction(region.sessions) as session:
        rows = (
            (await session.execute(select(Elder).order_by(col(Elder.id)).limit(3))).scalars().all()
        )
        late, on_time, device = rows

        def alert(elder: Elder, **values: object) -> Alert:
            return Alert(elder_id=pk(elder), village_id=elder.village_id, **values)  # type: ignore[arg-type]

        session.add_all(
            [
                # Open, past its deadline with nobody there; its next ladder step is 3 s late.
                alert(
                    late,
                    kind="sos",
                    priority=1,
                    status=AlertStatus.dispatching,
                    raised_at=NOW - timedelta(minutes=20),
                    respond_by=NOW - timedelta(minutes=5),
                    last_trigger_at=NOW - timedelta(minutes=20),
                    next_check_at=NOW - timedelta(seconds=3),
                ),
                # Handled in time.
                alert(
                    on_time,
                    kind="fall",
                    priority=1,
                    status=AlertStatus.resolved,
                    raised_at=NOW - timedelta(hours=1),
                    respond_by=NOW - timedelta(minutes=45),
                    on_scene_at=NOW - timedelta(minutes=50),
                    resolved_at=NOW - timedelta(minutes=30),
                    last_trigger_at=NOW - timedelta(hours=1),
                ),
                # Device trouble: open, no deadline.
                alert(
                    device,
                    kind="low_battery",
                    priority=3,
                    status=AlertStatus.raised,
                    raised_at=NOW - timedelta(minutes=2),
                    last_trigger_at=NOW - timedelta(minutes=2),
                ),
                SmsMessage(
                    direction="out",
                    to_phone="+8613800138000",
                    body="test",
                    status="queued",
                    created_at=NOW - timedelta(seconds=90),
                ),
            ]
        )


async def test_database_figures_reach_the_scrape(region: Seeded) -> None:
    await _seed_alerts(region)
    publish(await read_db_figures(region.sessions, NOW))
    samples = _samples(await _scrape_app())
    assert samples[("anxin_open_alerts", (("priority", "1"),))] == 1
    assert samples[("anxin_open_alerts", (("priority", "2"),))] == 0
    assert samples[("anxin_open_alerts", (("priority", "3"),))] == 1
    assert samples[("anxin_open_alerts_breached", ())] == 1
    assert samples[("anxin_sms_oldest_unsent_seconds", ())] == 90
    assert samples[("anxin_timer_overdue_seconds", ())] == 3
    # One on time, one breached: half the decided alerts met the 15-minute rule.
    assert samples[("anxin_response_compliance_ratio", (("window", "24h"),))] == 0.5
    assert samples[("anxin_response_decided_alerts", (("window", "30d"),))] == 2


async def test_an_empty_deployment_reads_as_healthy(sessions: SessionMaker) -> None:
    publish(await read_db_figures(sessions, NOW))
    samples = _samples(await _scrape_app())
    assert samples[("anxin_open_alerts", (("priority", "1"),))] == 0
    assert samples[("anxin_sms_oldest_unsent_seconds", ())] == 0
    assert samples[("anxin_timer_overdue_seconds", ())] == 0
    assert samples[("anxin_response_compliance_ratio", (("window", "30d"),))] == 1


async def test_refresh_task_keeps_going_and_stops_when_told(sessions: SessionMaker) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(refresh_db_gauges(sessions, FakeClock(NOW), stop, 0.05))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 5)
    samples = _samples(await _scrape_app())
    assert samples[("anxin_db_gauges_up", ())] == 1


async def test_a_role_without_http_serves_metrics_on_its_own_port(sessions: SessionMaker) -> None:
    count_ack("accepted", 2)
    count_dead_letter("invalid_json")
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_role_metrics(
            sessions,
            FakeClock(NOW),
            ("gateway",),
            stop,
            MetricsSettings(metrics_port=port, metrics_host="127.0.0.1"),
        )
    )
    try:
        text = ""
        async with httpx.AsyncClient() as client:
            for _ in range(100):
                try:
                    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    samples = _samples(text)
    assert samples[("anxin_device_acks_total", (("status", "accepted"),))] >= 2
    assert samples[("anxin_dead_letters_total", (("reason", "invalid_json"),))] >= 1
    for name in METRIC_NAMES:
        assert f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_total')}" in text, name


async def test_an_unreachable_database_shows_as_stale_figures_not_a_crash() -> None:
    engine = make_engine(f"postgresql+asyncpg://anxin@127.0.0.1:{free_port()}/anxin")
    stop = asyncio.Event()
    task = asyncio.create_task(
        refresh_db_gauges(make_sessionmaker(engine), FakeClock(NOW), stop, 0.05)
    )
    try:
        for _ in range(200):
            if _samples(await _scrape_app()).get(("anxin_db_gauges_up", ())) == 0:
                break
            await asyncio.sleep(0.05)
        assert not task.done()
        assert _samples(await _scrape_app())[("anxin_db_gauges_up", ())] == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await engine.dispose()
