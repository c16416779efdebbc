"""Care-visit benchmark: the visit schedule for 10⁵ elders, and the month's figures queried.

    .venv/bin/python bench/bench_visits.py [--elders 100000] [--villages 1000] [--repeat 3]

1. Pure (`visits.schedule`, no database): `--elders` elders with random categories in
   `--villages` villages, about 1.3 visits each in November 2026 (some rejected) and a major
   change for 1 %; the month's dues, their outcomes and the rates per village / township /
   county, then every elder's status now (`elder_status`, the overdue tab's input). Time
   (median of `--repeat`) and the peak of Python allocations (tracemalloc) per step.
2. Database: a scratch database on a real Postgres (ANXIN_BENCH_DATABASE_URL, default the
   machine's postgresql://postgres@127.0.0.1:5432/postgres), built by Alembic, filled by SQL
   (one county, 10 townships, the villages, an aide each, the elders and their visits), then
   `visits.service.month_figures` for the whole county (what `GET /api/figures/visits` and
   `anxin figures visits` run): wall time and Python peak; then, once each, where every elder
   stands now county-wide — `overdue_visits` (GET /api/visits/overdue), `queue_digests` as a
   dry run (the weekly digest), and `elder_statuses` (the ORM path) beside them, with how many
   are overdue (the two must agree); the database is dropped at the end.

Measured 2026-12-03 on the 2-core shared machine, load average 4.6–7 (other helpers' tests),
10⁵ elders in 1,000 villages, 142,957 visits (pure) / 132,779 (database):
  pure: month_dues 476 ms (130,592 dues, peak 23 MiB), assess 738 ms (45 MiB), visit_rates
  160 ms (1,011 regions, 17 MiB), elder_status for every elder 986 ms;
  month_figures, whole county from Postgres: median 5.35 s (4.85, 5.59, 5.35), Python peak
  158 MiB, 58,287 missed visits listed. Before reading elders as plain rows and visits by
  village subquery it was 6.5 s for 20,000 elders; under load 10–11 the same run took 27 s.
Measured 2026-12-03 19:07–19:12 UTC, load average 10.7–11.1 (every figure about 3.5× the quieter
run above: month_figures took 19.2 s), 10⁵ elders: overdue_visits 16.0 s (27,587 overdue),
queue_digests dry run 19.9 s (1,000 aides), elder_statuses 40.7 s (27,587 overdue: the same).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from visits import schedule

ADMIN_URL = os.environ.get(
    "ANXIN_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TZ = "Asia/Shanghai"
MONTH = "2026-11"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 on 1 December in Shanghai
T = TypeVar("T")

# Shares of the demo county's roster (device_sim.region.generate), roughly.
SHARES = {
    "living_alone": 0.30,
    "empty_nest": 0.25,
    "left_behind": 0.10,
    "advanced_age": 0.20,
    "disabled": 0.05,
    "semi_disabled": 0.08,
    "dementia": 0.03,
    "extreme_poverty": 0.04,
    "low_income": 0.12,
    "severe_disability": 0.02,
    "family_planning_special": 0.02,
}


def _facts(
    elders: int, villages: int, seed: int = 18
) -> tuple[list[schedule.ElderFacts], list[schedule.VisitFact], list[schedule.MajorChangeFact]]:
    rng = random.Random(seed)
    facts: list[schedule.ElderFacts] = []
    visits: list[schedule.VisitFact] = []
    changes: list[schedule.MajorChangeFact] = []
    start = datetime(2026, 10, 31, 16, 0, tzinfo=UTC)  # 1 November, 00:00 local
    for i in range(1, elders + 1):
        flags = frozenset(c for c, share in SHARES.items() if rng.random() < share)
        village = 1 + i % villages
        facts.append(schedule.ElderFacts(i, village, flags, owner_id=village))
        for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3))):
            at = start + timedelta(minutes=rng.randrange(30 * 24 * 60))
            counted = rng.random() > 0.03
            visits.append(
                schedule.VisitFact(
                    i, at, schedule.local_date(at, TZ), counted, None if counted else "same_day"
                )
            )
        if rng.random() < 0.01:
            marked = start + timedelta(minutes=rng.randrange(29 * 24 * 60))
            changes.append(schedule.MajorChangeFact(i, marked, marked + timedelta(hours=24)))
    return facts, visits, changes


def measure(step: Callable[[], T], repeat: int) -> tuple[T, float, float]:
    """(result, median seconds of `repeat` untraced runs, peak MiB of Python allocations in one
    more run under tracemalloc, which slows it several times)."""
    times: list[float] = []
    for _ in range(repeat):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    tracemalloc.start()
    result = step()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, statistics.median(times), peak


def pure(elders: int, villages: int, repeat: int) -> None:
    facts, visits, changes = _facts(elders, villages)
    plans: dict[int, schedule.VisitPlan] = {}
    owners = {f.elder_id: f.owner_id for f in facts}
    village_of = {f.elder_id: f.village_id for f in facts}
    # villages 1..n under townships 10001..10010 under county 20000
    parents: dict[int, int | None] = {v: 10001 + v % 10 for v in range(1, villages + 1)}
    parents |= {t: 20000 for t in range(10001, 10011)}
    parents[20000] = None
    print(f"pure: {elders:,} elders, {len(visits):,} visits, {len(changes):,} major changes")
    dues, t, m = measure(lambda: schedule.month_dues(facts, plans, MONTH, changes, TZ), repeat)
    print(f"  month_dues    {len(dues):>9,} dues       {t * 1000:8.0f} ms  peak {m:6.1f} MiB")
    outcomes, t, m = measure(lambda: schedule.assess(dues, visits, owners, NOW, TZ), repeat)
    print(f"  assess        {len(outcomes):>9,} outcomes   {t * 1000:8.0f} ms  peak {m:6.1f} MiB")
    rates, t, m = measure(
        lambda: schedule.visit_rates(outcomes, village_of, parents, MONTH), repeat
    )
    county = next(r for r in rates if r.region_id == 20000)
    print(
        f"  visit_rates   {len(rates):>9,} regions    {t * 1000:8.0f} ms  peak {m:6.1f} MiB"
        f"  (county {county.visited:,}/{county.due:,} = {100 * (county.rate or 0):.1f} %)"
    )
    by_elder: dict[int, list[schedule.VisitFact]] = {}
    for v in visits:
        by_elder.setdefault(v.elder_id, []).append(v)
    plan = schedule.VisitPlan()
    now = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)

    def statuses() -> int:
        return sum(
            schedule.elder_status(f, plan, by_elder.get(f.elder_id, []), [], now, TZ).overdue
            for f in facts
        )

    overdue, t, m = measure(statuses, repeat)
    print(f"  elder_status  {len(facts):>9,} elders     {t * 1000:8.0f} ms  peak {m:6.1f} MiB"
          f"  ({overdue:,} overdue on 20 November)")  # fmt: skip


# --- the database ---------------------------------------------------------------------------


async def create_database() -> tuple[str, str]:
    name = f"anxin_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_URL)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base = ADMIN_URL.rsplit("/", 1)[0]
    return name, "postgresql+asyncpg://" + base.split("://", 1)[1] + "/" + name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


FLAG_COLUMNS = ", ".join(SHARES)
FLAG_VALUES = ", ".join(f"random() < {share}" for share in SHARES.values())


async def fill(url: str, elders: int, villages: int) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            """
            INSERT INTO regions (id, code, name, level, parent_id, response_minutes, circuity,
                                 ladder, travel_speeds)
            VALUES (20000, 'C01', '基准县', 'county', NULL, 15, 1.4, '{}', '{}');
            INSERT INTO regions (id, code, name, level, parent_id, response_minutes, circuity,
                                 ladder, travel_speeds)
            SELECT 10000 + t, 'T' || t, '乡' || t, 'township', 20000, 15, 1.4, '{}', '{}'
              FROM generate_series(1, 10) t;
            """
        )
        await conn.execute(
            """
            INSERT INTO regions (id, code, name, level, parent_id, response_minutes, circuity,
                                 ladder, travel_speeds)
            SELECT v, 'V' || v, '村' || v, 'village', 10001 + v % 10, 15, 1.4, '{}', '{}'
              FROM generate_series(1, $1::int) v;
            INSERT INTO responders (kind, name, phone, village_id, lat, lon, travel_mode,
                                    setup_minutes, on_duty, lang)
            SELECT 'aide', '助老员' || v, '+86139' || lpad(v::text, 8, '0'), v, 32.7, 109.0,
                   'ebike', 2, true, 'zh'
              FROM generate_series(1, $1::int) v;
            """.replace("$1::int", str(villages))
        )
        await conn.execute(
            f"""
            INSERT INTO elders (code, name, village_id, address, lat, lon, {FLAG_COLUMNS},
                                wanders, guardian_phones, consent, night_start, night_end,
                                thresholds)
            SELECT 'E' || lpad(g::text, 6, '0'), '老人' || g, 1 + g % {villages}, '', 32.7,
                   109.0, {FLAG_VALUES}, false, '[]', true, '22:00', '06:00', '{{}}'
              FROM generate_series(1, {elders}) g
            """
        )
        # About 1.3 visits an elder in November, a few rejected; each counted one on its own
        # day (the unique index), so the random day is drawn per (elder, slot).
        await conn.execute(
            """
            INSERT INTO visits (elder_id, elder_code, visited_at, local_date, recorded_at, mode,
                                channel, status, reject_reason, note, concern)
            SELECT e.id, e.code, ts, (ts AT TIME ZONE 'Asia/Shanghai')::date, ts, 'home', 'sms',
                   CASE WHEN slot = 3 THEN 'rejected' ELSE 'counted' END,
                   CASE WHEN slot = 3 THEN 'same_day' END, '', false
              FROM elders e
              CROSS JOIN LATERAL (
                  SELECT slot, timestamptz '2026-10-31 16:00+00'
                               + (slot * 10 + floor(random() * 9)) * interval '1 day'
                               + floor(random() * 600) * interval '1 minute' AS ts
                    FROM generate_series(0, 2) slot
                   WHERE random() + e.id * 0 < CASE slot WHEN 0 THEN 0.7 WHEN 1 THEN 0.5
                                                         ELSE 0.1 END
                  UNION ALL
                  SELECT 3, timestamptz '2026-11-10 02:00+00' WHERE random() + e.id * 0 < 0.03
              ) v
            """
        )
        await conn.execute("ANALYZE")
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM elders) e, (SELECT count(*) FROM visits) v"
        )
        print(f"database: {counts['e']:,} elders, {counts['v']:,} visits in {villages:,} villages")
    finally:
        await conn.close()


async def database(elders: int, villages: int, repeat: int) -> None:
    from anxin import auth
    from anxin.db import make_engine, make_sessionmaker, migrate
    from visits.service import elder_statuses, month_figures, overdue_visits, queue_digests

    name, url = await create_database()
    try:
        await migrate(url)
        began = time.perf_counter()
        await fill(url, elders, villages)
        print(f"  filled in {time.perf_counter() - began:.1f} s")
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        times: list[float] = []
        peak = 0.0
        rows: list[Any] = []
        # `repeat` timed runs, then one under tracemalloc for the peak (it slows a run 3–10×).
        for traced in [False] * repeat + [True]:
            async with sessions() as session:
                scope = await auth.regions_under(session, 20000)
                if traced:
                    tracemalloc.start()
                t0 = time.perf_counter()
                rows = await month_figures(
                    session, region_ids=scope, month=MONTH, now=NOW, timezone=TZ
                )
                if traced:
                    peak = tracemalloc.get_traced_memory()[1] / 2**20
                    tracemalloc.stop()
                else:
                    times.append(time.perf_counter() - t0)
        county = rows[0]
        print(
            f"  month_figures (whole county, {len(rows):,} regions): median "
            f"{statistics.median(times):.2f} s of {', '.join(f'{t:.2f}' for t in times)}; "
            f"peak {peak:.0f} MiB; county {county.visited:,}/{county.due:,} = "
            f"{100 * (county.rate or 0):.1f} %, {county.missed_count:,} missed"
        )
        # Where every elder stands now, county-wide: the overdue tab and the weekly digest
        # (one row per elder) beside `elder_statuses` (ORM elders, half a year of visits).
        ids = {r for r in scope if r < 10000}  # the villages: 1…villages (townships 10001…)
        async with sessions() as session:
            t0 = time.perf_counter()
            overdue = await overdue_visits(session, village_ids=ids, now=NOW, timezone=TZ)
            print(
                f"  overdue_visits (whole county): {time.perf_counter() - t0:.2f} s, "
                f"{len(overdue):,} overdue"
            )
        async with sessions() as session:
            t0 = time.perf_counter()
            run = await queue_digests(session, now=NOW, timezone=TZ, daily_limit=50, dry_run=True)
            print(
                f"  queue_digests dry run (whole county): {time.perf_counter() - t0:.2f} s, "
                f"{len(run.queued):,} aides"
            )
        async with sessions() as session:
            t0 = time.perf_counter()
            slow = await elder_statuses(session, village_ids=ids, now=NOW, timezone=TZ)
            print(
                f"  elder_statuses (whole county): {time.perf_counter() - t0:.2f} s, "
                f"{sum(r.status.overdue for r in slow):,} overdue"
            )
        await engine.dispose()
    finally:
        await drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--elders", type=int, default=100_000)
    parser.add_argument("--villages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-database", action="store_true", help="the pure part only")
    args = parser.parse_args()
    from anxin.logging import configure_logging

    configure_logging("warning")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {os.cpu_count()} cores")
    pure(args.elders, args.villages, args.repeat)
    if not args.no_database:
        asyncio.run(database(args.elders, args.villages, args.repeat))


if __name__ == "__main__":
    main()
