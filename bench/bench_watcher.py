"""Watcher benchmark: lateness of fired ladder steps with 100,000 open alerts, and idle CPU.

    .venv/bin/python bench/bench_watcher.py [--alerts 100000] [--due N] [--window 600]
                                            [--watchers 1] [--idle 30] [--poll-ms 200]
                                            [--json PATH]

Against a real Postgres (ANXIN_BENCH_DATABASE_URL, default the machine's
postgresql://postgres@127.0.0.1:5432/postgres): a scratch database is created, the schema built
with Alembic (`anxin.db.migrate`), and the database dropped at the end.

Load: `--alerts` open P1 alerts (one per elder), each taken by an aide who never reports
arrival, so each has exactly one timer left: its 15-minute deadline. `--due` of them (default
all) have their deadlines spread evenly over `--window` seconds starting a few seconds after
the watchers start; the others are due later (live timers in the same index). When one is
due the watcher runs the real ladder step — breached, the county centre asked (an attempt, an
SMS in the outbox, two timeline entries) — in the real loop (`run_watcher`, SystemClock,
`--poll-ms`), each watcher in its own process as replicas run.

Lateness of a fired step = the wall-clock time its transaction committed − its due time.
Then every alert gets a timer a day away (100,000 open alerts with timers, none due) and the
watchers' CPU is measured over `--idle` seconds: the process (getrusage) and its Postgres
backends (/proc/<pid>/stat, when Postgres runs on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import asyncpg

ADMIN_URL = os.environ.get(
    "ANXIN_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
APP_NAME = "anxin-bench-watcher"
AIDES = 5


# --- the database ---------------------------------------------------------------------------


async def create_database() -> tuple[str, str]:
    name = f"anxin_bench_watcher_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_URL)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base = ADMIN_URL.rsplit("/", 1)[0]
    return name, "postgresql+asyncpg://" + base.split("://", 1)[1] + "/" + name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def load(url: str, alerts: int) -> None:
    """A county, a township, a village, five aides and two centres; one elder per alert; the
    alerts (taken, reminded, at risk: only the deadline left) with their accepted attempt."""
    from alert_service.rules import Ladder

    conn = await asyncpg.connect(_plain(url))
    try:
        county = await conn.fetchval(
            "INSERT INTO regions (code, name, level, response_minutes, circuity, ladder) "
            "VALUES ('C', '县', 'county', 15, 1.4, '{}') RETURNING id"
        )
        township = await conn.fetchval(
            "INSERT INTO regions (code, name, level, parent_id, response_minutes, circuity, ladder)"
            " VALUES ('T', '乡', 'township', $1, 15, 1.4, '{}') RETURNING id",
            county,
        )
        village = await conn.fetchval(
            "INSERT INTO regions (code, name, level, parent_id, response_minutes, circuity, ladder)"
            " VALUES ('V', '村', 'village', $1, 15, 1.4, '{}') RETURNING id",
            township,
        )
        responders = []
        for i, kind in enumerate(["aide"] * AIDES + ["township_centre", "county_centre"]):
            responders.append(
                await conn.fetchval(
                    "INSERT INTO responders (kind, name, phone, village_id, lat, lon, travel_mode,"
                    " setup_minutes, on_duty, lang) VALUES ($1, $2, $3, $4, 32.7, 109.0, 'ebike',"
                    " 2, true, 'zh') RETURNING id",
                    kind,
                    f"R{i}",
                    f"+861380000{i:04d}",
                    village if kind == "aide" else None,
                )
            )
        await conn.copy_records_to_table(
            "elders",
            columns=[
                "code",
                "name",
                "village_id",
                "address",
                "lat",
                "lon",
                "living_alone",
                "empty_nest",
                "left_behind",
                "disabled",
                "advanced_age",
                "wanders",
                "guardian_phones",
                "consent",
                "night_start",
                "night_end",
                "thresholds",
            ],
            records=[
                (
                    f"E{i:06d}",
                    f"老人{i}",
                    village,
                    "",
                    32.7,
                    109.0,
                    False,
                    False,
                    False,
                    False,
                    False,
                    False,
                    "[]",
                    False,
                    "22:00",
                    "06:00",
                    "{}",
                )
                for i in range(alerts)
            ],
        )
        ranking = json.dumps(
            [
                {
                    "responder_id": r,
                    "kind": "aide",
                    "name": "",
                    "distance_km": 1.0,
                    "eta_minutes": 4.0 + i,
                }
                for i, r in enumerate(responders[:AIDES])
            ]
            + [
                {"responder_id": responders[AIDES], "kind": "township_centre", "eta_minutes": 12.0},
                {
                    "responder_id": responders[AIDES + 1],
                    "kind": "county_centre",
                    "eta_minutes": 25.0,
                },
            ]
        )
        ladder = json.dumps(Ladder().snapshot())
        placeholder = datetime(2026, 1, 1, tzinfo=UTC)
        elder_ids = [r["id"] for r in await conn.fetch("SELECT id FROM elders ORDER BY id")]
        await conn.copy_records_to_table(
            "alerts",
            columns=[
                "elder_id",
                "village_id",
                "township_id",
                "county_id",
                "kind",
                "priority",
                "status",
                "raised_at",
                "respond_by",
                "accepted_at",
                "accepted_by",
                "note",
                "trigger_count",
                "last_trigger_at",
                "at_risk",
                "breached",
                "cancel_requested",
                "call_120",
                "reminder_sent_at",
                "ladder",
                "ranking",
                "next_check_at",
            ],
            records=[
                (
                    e,
                    village,
                    township,
                    county,
                    "sos",
                    1,
                    "accepted",
                    placeholder,
                    placeholder,
                    placeholder,
                    responders[0],
                    "",
                    1,
                    placeholder,
                    True,
                    False,
                    False,
                    False,
                    placeholder,
                    ladder,
                    ranking,
                    placeholder,
                )
                for e in elder_ids
            ],
        )
        await conn.execute(
            "INSERT INTO dispatch_attempts (alert_id, responder_id, step, role, asked_at,"
            " distance_km, eta_minutes, answer, answered_at)"
            " SELECT id, $1, 0, 'aide', raised_at, 1.0, 4.0, 'accepted', accepted_at FROM alerts",
            responders[0],
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def schedule(url: str, start: datetime, window_s: float, due: int) -> None:
    """The first `due` deadlines evenly over the window, the others spread over the next day
    (live timers the watcher must step over); each alert's other times relative to its own."""
    conn = await asyncpg.connect(_plain(url))
    try:
        gap = window_s / max(1, due - 1)
        later = timedelta(seconds=window_s + 3600)
        await conn.execute(
            """
            WITH ordered AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM alerts),
            deadline AS (
                SELECT id, CASE WHEN n < $3
                    THEN $1::timestamptz + make_interval(secs => n * $2::float8)
                    ELSE $1::timestamptz + $4::interval + make_interval(secs => (n - $3) * 0.5)
                END AS at FROM ordered
            )
            UPDATE alerts a
               SET respond_by = d.at,
                   next_check_at = d.at,
                   raised_at = d.at - interval '15 minutes',
                   last_trigger_at = d.at - interval '15 minutes',
                   accepted_at = d.at - interval '14 minutes',
                   reminder_sent_at = d.at - interval '7 minutes'
              FROM deadline d WHERE d.id = a.id
            """,
            start,
            gap,
            due,
            later,
        )
        await conn.execute(
            "UPDATE dispatch_attempts d SET asked_at = a.raised_at, answered_at = a.accepted_at"
            " FROM alerts a WHERE a.id = d.alert_id"
        )
        await conn.execute("VACUUM ANALYZE alerts")
        await conn.execute("VACUUM ANALYZE dispatch_attempts")
    finally:
        await conn.close()


async def count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(_plain(url))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


# --- a watcher, in its own process ----------------------------------------------------------


def _backend_cpu_seconds(pids: list[int]) -> float | None:
    """utime + stime of Postgres backends, when they run on this machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return None
    return total


def watcher_process(
    url: str, poll_ms: int, idle_s: float, idle: MpEvent, done: MpEvent, out: Any
) -> None:
    asyncio.run(_watcher(url, poll_ms, idle_s, idle, done, out))


async def _watcher(
    url: str, poll_ms: int, idle_s: float, idle: MpEvent, done: MpEvent, out: Any
) -> None:
    from sqlalchemy import event, text
    from sqlalchemy.orm import Session

    from alert_service import ladder as alert_ladder
    from alert_service import watcher
    from anxin.clock import SystemClock
    from anxin.db import make_engine, make_sessionmaker
    from anxin.logging import configure_logging

    configure_logging("warning")
    engine = make_engine(
        url,
        pool_size=2,
        max_overflow=0,
        connect_args={"server_settings": {"application_name": APP_NAME}},
    )
    sessions = make_sessionmaker(engine)

    # Record each fired step's due time, and stamp them when their transaction commits.
    pending_dues: list[float] = []
    lateness: list[tuple[float, float]] = []  # (due, committed − due)
    real_advance = alert_ladder.advance

    async def recording_advance(session: Any, alert: Any, now: datetime, *args: Any) -> None:
        if alert.next_check_at is not None and alert.next_check_at <= now:
            pending_dues.append(alert.next_check_at.timestamp())
        await real_advance(session, alert, now, *args)

    def committed(_session: Session) -> None:
        stamp = time.time()
        lateness.extend((due, stamp - due) for due in pending_dues)
        pending_dues.clear()

    def rolled_back(_session: Session) -> None:
        pending_dues.clear()

    alert_ladder.advance = recording_advance  # type: ignore[assignment]
    event.listen(Session, "after_commit", committed)
    event.listen(Session, "after_rollback", rolled_back)

    stop = asyncio.Event()
    loop_task = asyncio.create_task(
        watcher.run_watcher(
            sessions, SystemClock(), "Asia/Shanghai", poll_seconds=poll_ms / 1000, stop=stop
        )
    )
    await asyncio.to_thread(idle.wait)

    # Idle: nothing due, 100,000 open alerts with timers.
    async with engine.connect() as conn:
        backends = [
            int(p)
            for p in (
                await conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": APP_NAME},
                )
            ).scalars()
        ]
    fired_before_idle = len(lateness)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    backend0 = _backend_cpu_seconds(backends)
    wall0 = time.monotonic()
    await asyncio.sleep(idle_s)
    wall = time.monotonic() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    backend1 = _backend_cpu_seconds(backends)
    stop.set()
    await loop_task
    await engine.dispose()
    out.put(
        {
            "lateness_s": lateness[:fired_before_idle],
            "fired_while_idle": len(lateness) - fired_before_idle,
            "idle_wall_s": wall,
            "idle_cpu_s": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
            "idle_backend_cpu_s": (
                backend1 - backend0 if backend0 is not None and backend1 is not None else None
            ),
            "backends": len(backends),
        }
    )
    done.set()


# --- the run --------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from anxin.db import migrate

    name, url = await create_database()
    try:
        t = time.monotonic()
        await migrate(url)
        await load(url, args.alerts)
        print(f"loaded {args.alerts} open alerts in {time.monotonic() - t:.1f} s", flush=True)

        ctx = mp.get_context("spawn")
        idle, out = ctx.Event(), ctx.Queue()
        dones = [ctx.Event() for _ in range(args.watchers)]
        processes = [
            ctx.Process(
                target=watcher_process, args=(url, args.poll_ms, args.idle, idle, done, out)
            )
            for done in dones
        ]
        # Deadlines start once the watchers are surely up (they spawn and import first).
        start = datetime.now(UTC) + timedelta(seconds=args.lead)
        due = min(args.due or args.alerts, args.alerts)
        await schedule(url, start, args.window, due)
        for p in processes:
            p.start()
        print(
            f"{args.alerts} open alerts; {due} deadlines over {args.window:.0f} s "
            f"({due / args.window:.0f}/s) from {start:%H:%M:%S} UTC, the rest later; "
            f"{args.watchers} watcher process(es), poll {args.poll_ms} ms",
            flush=True,
        )
        end = start + timedelta(seconds=args.window)
        await asyncio.sleep((end - datetime.now(UTC)).total_seconds() + 2)
        for _ in range(600):  # the watchers may be behind: wait for them to catch up
            if not await count(url, "SELECT count(*) FROM alerts WHERE next_check_at <= now()"):
                break
            await asyncio.sleep(0.5)
        fired = await count(url, "SELECT count(*) FROM alerts WHERE breached")
        # (a step is fired exactly once: breached alerts in the database = steps recorded)
        load_avg = os.getloadavg()

        # Idle: every alert open with a timer a day away.
        conn = await asyncpg.connect(_plain(url))
        await conn.execute("UPDATE alerts SET next_check_at = now() + interval '1 day'")
        await conn.close()
        idle.set()
        results = [await asyncio.to_thread(out.get, True, args.idle + 120) for _ in processes]
        for p in processes:
            p.join(30)
    finally:
        await drop_database(name)

    pairs = sorted(pair for r in results for pair in r["lateness_s"])
    lateness = [late for _, late in pairs]
    tenth = max(1, len(pairs) // 10)
    # Median lateness per tenth of the window: flat when the watcher keeps up, rising when not.
    by_tenth = [
        round(statistics.median(lateness[i : i + tenth]), 3) for i in range(0, len(pairs), tenth)
    ]
    idle_cpu = sum(r["idle_cpu_s"] for r in results)
    backend = [r["idle_backend_cpu_s"] for r in results]
    idle_wall = max(r["idle_wall_s"] for r in results)
    return {
        "alerts": args.alerts,
        "window_s": args.window,
        "due_in_window": due,
        "deadlines_per_s": due / args.window,
        "watchers": args.watchers,
        "poll_ms": args.poll_ms,
        "fired_steps": len(lateness),
        "alerts_breached_in_db": fired,
        "lateness_s": {
            "p50": statistics.median(lateness) if lateness else None,
            "p90": percentile(lateness, 0.9) if lateness else None,
            "p99": percentile(lateness, 0.99) if lateness else None,
            "max": max(lateness) if lateness else None,
            "over_1s": sum(1 for x in lateness if x > 1.0),
            "p50_per_tenth_of_window": by_tenth,
        },
        "idle": {
            "seconds": idle_wall,
            "watcher_cpu_percent": 100 * idle_cpu / idle_wall,
            "postgres_backend_cpu_percent": (
                100 * sum(b for b in backend if b is not None) / idle_wall
                if all(b is not None for b in backend)
                else None
            ),
            "steps_fired_while_idle": sum(r["fired_while_idle"] for r in results),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_during_run": load_avg,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=600.0, help="seconds of deadlines")
    parser.add_argument(
        "--due", type=int, default=None, help="alerts due within the window (default: all)"
    )
    parser.add_argument("--watchers", type=int, default=1, help="watcher processes")
    parser.add_argument("--poll-ms", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measurement")
    parser.add_argument("--lead", type=float, default=15.0, help="seconds before the first due")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench_watcher.json"))
    args = parser.parse_args()
    result = asyncio.run(run(args))
    late = result["lateness_s"]
    print(
        f"fired {result['fired_steps']} steps ({result['deadlines_per_s']:.0f}/s): lateness "
        f"p50 {late['p50']:.3f} s, p90 {late['p90']:.3f} s, p99 {late['p99']:.3f} s, "
        f"max {late['max']:.3f} s, over 1 s: {late['over_1s']}"
    )
    idle = result["idle"]
    backend = idle["postgres_backend_cpu_percent"]
    print(
        f"idle ({idle['seconds']:.0f} s, {args.alerts} open alerts, none due): watcher CPU "
        f"{idle['watcher_cpu_percent']:.2f} %"
        + (f", its Postgres backends {backend:.2f} %" if backend is not None else "")
    )
    print(f"load average {result['machine']['load_average_during_run']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
