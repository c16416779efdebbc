"""Coverage benchmark: time to compute who no aide can reach in 15 minutes, for the demo county
(120 homes) and for 10,000 elders, and the demo county's coverage list.

    .venv/bin/python bench/bench_coverage.py [--homes 120 10000] [--runs 5] [--json PATH]

Against a real Postgres (ANXIN_BENCH_DATABASE_URL, default the machine's
postgresql://postgres@127.0.0.1:5432/postgres): per size a scratch database is created, the
schema built with Alembic, the demo region of that many homes seeded (`device_sim.region`, as
`anxin db seed` does), and the database dropped at the end. Each run is one
`alert_service.coverage_service.coverage_in` over the whole county in a fresh session (the
queries, `dispatcher.ranking.rank_for_alerts` and the pure list), timed on the wall clock;
the median and the slowest are printed, with the longest the event loop was held meanwhile
and the process's peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

ADMIN_URL = os.environ.get(
    "ANXIN_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _longest_stall(done: asyncio.Event) -> float:
    """The longest the event loop went without running a 1 ms sleep while coverage ran: what
    another request on the same web process would have waited."""
    longest, last = 0.0, time.perf_counter()
    while not done.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        longest, last = max(longest, now - last - 0.001), now
    return longest


async def measure(homes: int, runs: int) -> dict[str, Any]:
    from sqlalchemy import select
    from sqlmodel import col

    from alert_service import coverage_service
    from anxin import auth
    from anxin.clock import SystemClock
    from anxin.db import make_engine, make_sessionmaker, migrate, transaction
    from anxin.models import Region
    from device_sim.region.generate import generate_region
    from device_sim.region.seed import seed_region

    name = f"anxin_bench_coverage_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = "postgresql+asyncpg://" + ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    try:
        await migrate(url)
        sessions = make_sessionmaker(engine)
        plan = generate_region(homes)
        t = time.monotonic()
        async with transaction(sessions) as session:
            # A cheap device hash: the benchmark times coverage, not argon2.
            await seed_region(session, plan, lambda p: p, auth.hash_password)
        seeded_s = time.monotonic() - t
        async with sessions() as session:
            scope = {r for r in (await session.execute(select(col(Region.id)))).scalars() if r}
        now = SystemClock().now()
        times: list[float] = []
        stalls: list[float] = []
        found = None
        for _ in range(runs):
            done = asyncio.Event()
            ticker = asyncio.create_task(_longest_stall(done))
            async with sessions() as session:
                t = time.perf_counter()
                found = await coverage_service.coverage_in(session, region_ids=scope, now=now)
                times.append(time.perf_counter() - t)
            done.set()
            stalls.append(await ticker)
        assert found is not None
        return {
            "homes": homes,
            "elders": len(found.elders),
            "villages": len([v for v in plan.villages]),
            "aides": len(plan.aides),
            "uncovered": [
                {
                    "code": e.code,
                    "village": e.village,
                    "township": e.township,
                    "aide": e.aide_name,
                    "eta_minutes": e.eta_minutes,
                }
                for e in found.uncovered
            ],
            "villages_without_aide": [v.village for v in found.villages_without_aide],
            "slowest_eta_minutes": max((e.eta_minutes or 0.0) for e in found.elders),
            "seed_s": round(seeded_s, 2),
            "runs": runs,
            "median_ms": round(1000 * statistics.median(times), 1),
            "max_ms": round(1000 * max(times), 1),
            "longest_loop_stall_ms": round(1000 * max(stalls), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        await engine.dispose()
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for homes in args.homes:
        result = await measure(homes, args.runs)
        results.append(result)
        print(
            f"{result['elders']:>6} elders, {result['villages']:>4} villages, "
            f"{result['aides']:>4} aides: coverage in {result['median_ms']} ms median, "
            f"{result['max_ms']} ms slowest of {result['runs']}, event loop held at most "
            f"{result['longest_loop_stall_ms']} ms (peak RSS "
            f"{result['peak_rss_mb']} MB); {len(result['uncovered'])} uncovered, "
            f"{len(result['villages_without_aide'])} villages with no aide on duty, "
            f"slowest fastest-aide ETA {result['slowest_eta_minutes']:.1f} min",
            flush=True,
        )
        for e in result["uncovered"][:20]:
            print(f"    {e['code']} {e['township']} {e['village']}: {e['aide']} {e['eta_minutes']}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--homes", type=int, nargs="+", default=[120, 10_000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    results = asyncio.run(run(args))
    print(f"load average after: {os.getloadavg()}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
