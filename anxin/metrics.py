"""Prometheus metrics for every role: one place defines them all, the roles call small helpers.

Two sorts of figure:

* **Counted in the process** (counters, histograms): messages in, acks, dead letters, commit
  time, timer lateness, SMS handed to the provider. Each role's process exposes its own; the
  dashboard sums them over replicas.
* **Read from the database** (gauges): open alerts by priority, the oldest unsent SMS, how far
  the most overdue timer is behind, devices online and the 15-minute compliance. They describe
  the whole deployment, not one process, so they are computed by a background task every few
  seconds (`refresh_db_gauges`) — never inside a scrape, which must not wait on Postgres — and
  only in the roles that run it (web and alerts, see `run_role_metrics`). The dashboard takes
  their `max` over instances.

The web role serves `/metrics` on its HTTP port (`metrics_router`); the other roles start a
small HTTP server on `ANXIN_METRICS_PORT` (0, the default, turns it off: a laptop running
several roles side by side needs no extra ports; the containers set 9100).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text

from anxin.clock import Clock
from anxin.db import SessionMaker
from anxin.logging import get_logger

log = get_logger("anxin.metrics")

# --- counted in the process -------------------------------------------------------------------

MESSAGES_IN = Counter(
    "anxin_mqtt_messages_total",
    "MQTT messages received by the gateway, by kind (event, heartbeat, status).",
    ["kind"],
)
DEVICE_ACKS = Counter(
    "anxin_device_acks_total",
    "Application acks sent to devices after commit, by status (accepted, duplicate, rejected).",
    ["status"],
)
DEAD_LETTERS = Counter(
    "anxin_dead_letters_total",
    "Messages stored as dead letters, by reason (invalid_json, unknown_device, …).",
    ["reason"],
)
DB_COMMIT_SECONDS = Histogram(
    "anxin_db_commit_seconds",
    "Time to commit one unit of work (a gateway batch, a watcher tick, an outbox pass).",
    ["role"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TIMER_LATENESS_SECONDS = Histogram(
    "anxin_timer_lateness_seconds",
    "How late the watcher fired a due ladder step or rule timer (fired at − due at).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
SMS_HANDED_OVER = Counter(
    "anxin_sms_total",
    "Outbound SMS handed to the provider, by result (sent, outbox, failed, retry).",
    ["result"],
)

# --- read from the database -------------------------------------------------------------------

PRIORITIES = (1, 2, 3)
COMPLIANCE_WINDOWS: dict[str, timedelta] = {"24h": timedelta(hours=24), "30d": timedelta(days=30)}

OPEN_ALERTS = Gauge(
    "anxin_open_alerts",
    "Alerts not yet resolved, by priority (1 emergency, 2 urgent, 3 device trouble).",
    ["priority"],
)
BREACHED_OPEN_ALERTS = Gauge(
    "anxin_open_alerts_breached",
    "Open alerts already past their 15-minute deadline with nobody on scene.",
)
OLDEST_UNSENT_SMS_SECONDS = Gauge(
    "anxin_sms_oldest_unsent_seconds",
    "Age of the oldest SMS still waiting in the outbox (0 when none waits).",
)
TIMER_OVERDUE_SECONDS = Gauge(
    "anxin_timer_overdue_seconds",
    "How far past due the most overdue ladder step or rule timer is (0 when none is).",
)
DEVICES_ONLINE = Gauge("anxin_devices_online", "Enabled devices currently online.")
COMPLIANCE_RATIO = Gauge(
    "anxin_response_compliance_ratio",
    "Share of decided P1/P2 alerts raised in the window where someone was on scene by the "
    "deadline (1 when none was decided), as in the monthly figures.",
    ["window"],
)
DECIDED_ALERTS = Gauge(
    "anxin_response_decided_alerts",
    "P1/P2 alerts raised in the window that are decided: on scene, closed, or past the deadline.",
    ["window"],
)
DB_GAUGES_UP = Gauge(
    "anxin_db_gauges_up",
    "1 when the database figures above were refreshed successfully, 0 when the last try failed.",
)
DB_GAUGES_AGE_SECONDS = Gauge(
    "anxin_db_gauges_refreshed_timestamp_seconds",
    "Unix time of the last successful refresh of the database figures.",
)

# Every metric name, for the dashboard test and the docs.
METRIC_NAMES = (
    "anxin_mqtt_messages_total",
    "anxin_device_acks_total",
    "anxin_dead_letters_total",
    "anxin_db_commit_seconds",
    "anxin_timer_lateness_seconds",
    "anxin_sms_total",
    "anxin_open_alerts",
    "anxin_open_alerts_breached",
    "anxin_sms_oldest_unsent_seconds",
    "anxin_timer_overdue_seconds",
    "anxin_devices_online",
    "anxin_response_compliance_ratio",
    "anxin_response_decided_alerts",
    "anxin_db_gauges_up",
    "anxin_db_gauges_refreshed_timestamp_seconds",
)


# --- helpers the roles call -------------------------------------------------------------------


def count_messages(kind: str, n: int = 1) -> None:
    MESSAGES_IN.labels(kind=kind).inc(n)


def count_ack(status: str, n: int = 1) -> None:
    DEVICE_ACKS.labels(status=status).inc(n)


def count_dead_letter(reason: str, n: int = 1) -> None:
    DEAD_LETTERS.labels(reason=reason).inc(n)


def count_sms(result: str, n: int = 1) -> None:
    SMS_HANDED_OVER.labels(result=result).inc(n)


def observe_commit(role: str, seconds: float) -> None:
    DB_COMMIT_SECONDS.labels(role=role).observe(seconds)


@contextlib.contextmanager
def timed_commit(role: str) -> Iterator[None]:
    """`with timed_commit("gateway"): await session.commit()` — a duration, not a clock reading
    for the rules, so the monotonic timer here is right."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_commit(role, time.perf_counter() - started)


def observe_timer_lateness(due_at: datetime, fired_at: datetime) -> None:
    TIMER_LATENESS_SECONDS.observe(max(0.0, (fired_at - due_at).total_seconds()))


# --- the database figures ---------------------------------------------------------------------


@dataclass
class DbFigures:
    open_alerts: dict[int, int] = field(default_factory=dict)
    breached_open: int = 0
    oldest_unsent_sms_seconds: float = 0.0
    timer_overdue_seconds: float = 0.0
    devices_online: int = 0
    # window → (on time, decided)
    compliance: dict[str, tuple[int, int]] = field(default_factory=dict)


# Each query reads a partial or plain index (alerts by status, the outbox's queued rows, due
# timers, online devices), so a refresh stays cheap at a city's million devices.
_OPEN_ALERTS_SQL = text(
    "SELECT priority, count(*) AS n, "
    "count(*) FILTER (WHERE respond_by < :now AND on_scene_at IS NULL) AS breached "
    "FROM alerts WHERE status <> 'resolved' GROUP BY priority"
)
_OLDEST_SMS_SQL = text(
    "SELECT min(created_at) FROM sms_messages WHERE status = 'queued' AND direction = 'out'"
)
_DUE_ALERT_SQL = text("SELECT min(next_check_at) FROM alerts WHERE next_check_at IS NOT NULL")
_DUE_RULE_TIMER_SQL = text(
    "SELECT min(due_at) FROM rule_timers WHERE fired_at IS NULL AND NOT cancelled"
)
_DEVICES_ONLINE_SQL = text("SELECT count(*) FROM devices WHERE online AND enabled")
# The same definition as the monthly figures (alert_service/figures.py): P1 and P2 alerts with
# a deadline; decided once someone is on scene, it is closed, or the deadline has passed; met
# when someone was on scene by the deadline.
_COMPLIANCE_SQL = text(
    "SELECT count(*) FILTER (WHERE on_scene_at IS NOT NULL AND on_scene_at <= respond_by), "
    "count(*) FILTER (WHERE on_scene_at IS NOT NULL OR resolved_at IS NOT NULL "
    "OR respond_by <= :now) "
    "FROM alerts WHERE priority IN (1, 2) AND respond_by IS NOT NULL AND raised_at >= :since"
)


def _seconds_since(moment: datetime | None, now: datetime) -> float:
    return max(0.0, (now - moment).total_seconds()) if moment is not None else 0.0


async def read_db_figures(sessions: SessionMaker, now: datetime) -> DbFigures:
    figures = DbFigures()
    async with sessions() as session:
        for priority, n, breached in await session.execute(_OPEN_ALERTS_SQL, {"now": now}):
            figures.open_alerts[int(priority)] = int(n)
            figures.breached_open += int(breached)
        figures.oldest_unsent_sms_seconds = _seconds_since(
            await session.scalar(_OLDEST_SMS_SQL), now
        )
        due = [
            d
            for d in (
                await session.scalar(_DUE_ALERT_SQL),
                await session.scalar(_DUE_RULE_TIMER_SQL),
            )
            if d is not None
        ]
        figures.timer_overdue_seconds = _seconds_since(min(due), now) if due else 0.0
        figures.devices_online = int(await session.scalar(_DEVICES_ONLINE_SQL) or 0)
        for window, length in COMPLIANCE_WINDOWS.items():
            row = (
                await session.execute(_COMPLIANCE_SQL, {"now": now, "since": now - length})
            ).one()
            figures.compliance[window] = (int(row[0]), int(row[1]))
    return figures


def publish(figures: DbFigures) -> None:
    for priority in PRIORITIES:
        OPEN_ALERTS.labels(priority=str(priority)).set(figures.open_alerts.get(priority, 0))
    BREACHED_OPEN_ALERTS.set(figures.breached_open)
    OLDEST_UNSENT_SMS_SECONDS.set(figures.oldest_unsent_sms_seconds)
    TIMER_OVERDUE_SECONDS.set(figures.timer_overdue_seconds)
    DEVICES_ONLINE.set(figures.devices_online)
    for window, (on_time, decided) in figures.compliance.items():
        COMPLIANCE_RATIO.labels(window=window).set(on_time / decided if decided else 1.0)
        DECIDED_ALERTS.labels(window=window).set(decided)


async def refresh_db_gauges(
    sessions: SessionMaker,
    clock: Clock,
    stop: asyncio.Event | None = None,
    interval_seconds: float = 5.0,
) -> None:
    """Keep the database gauges fresh until `stop` is set. A failed refresh keeps the last
    figures and sets `anxin_db_gauges_up` to 0: a Postgres outage must not kill a role."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            publish(await read_db_figures(sessions, clock.now()))
            DB_GAUGES_UP.set(1)
            DB_GAUGES_AGE_SECONDS.set(clock.now().timestamp())
        except Exception as exc:  # any database trouble: report it as a figure, keep going
            DB_GAUGES_UP.set(0)
            with contextlib.suppress(Exception):  # not even a broken log stream stops a role
                log.warning("metrics_db_refresh_failed", error=str(exc)[:200])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_seconds)


# --- exposing them ----------------------------------------------------------------------------

metrics_router = APIRouter(tags=["health"])


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics_endpoint() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsSettings(BaseSettings):
    """`ANXIN_METRICS_PORT` / `ANXIN_METRICS_HOST`: where roles without HTTP serve /metrics."""

    model_config = SettingsConfigDict(env_prefix="ANXIN_", extra="ignore")
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"
    metrics_refresh_seconds: float = 5.0


def start_metrics_server(port: int, host: str = "0.0.0.0") -> Any | None:
    """Serve /metrics on `port` from a daemon thread (non-blocking). 0 → off. A port already in
    use is logged, not fatal: metrics must never stop a role from handling alerts."""
    if port <= 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics_port_unavailable", port=port, error=str(exc))
        return None
    log.info("metrics_serving", port=port)
    return server


# Roles whose process keeps the database gauges fresh: the web role (what operators and
# Prometheus look at) and the watcher (it runs wherever alerts are handled).
DB_GAUGE_ROLES = ("web", "alerts")


async def run_role_metrics(
    sessions: SessionMaker,
    clock: Clock,
    roles: tuple[str, ...],
    stop: asyncio.Event,
    settings: MetricsSettings | None = None,
) -> None:
    """Everything a role process needs for metrics, as one task for `role_tasks`: the /metrics
    server when the process has no web role, and the database gauges where they belong."""
    settings = settings or MetricsSettings()
    server = None
    if "web" not in roles:
        server = start_metrics_server(settings.metrics_port, settings.metrics_host)
    try:
        if any(role in roles for role in DB_GAUGE_ROLES):
            await refresh_db_gauges(sessions, clock, stop, settings.metrics_refresh_seconds)
        else:
            await stop.wait()
    finally:
        if server is not None:
            # shutdown() waits for the serving thread's next poll: not on the event loop.
            await asyncio.to_thread(server.shutdown)
