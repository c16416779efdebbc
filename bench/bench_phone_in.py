"""Phone-in benchmark (issue 20 item 1): an operator's 代报警 request → the first call-out SMS
request at the SMS endpoint.

    .venv/bin/python bench/bench_phone_in.py [--calls 150] [--rate 5] [--homes 200]

Real parts, each in its own process as in production: the web app (uvicorn, `create_app`), one
outbox worker (`run_outbox`, woken by LISTEN/NOTIFY), the project's Twilio-compatible endpoint;
Postgres (ANXIN_BENCH_DATABASE_URL, default the machine's postgresql://postgres@127.0.0.1:5432/
postgres) with a scratch database built by Alembic and seeded with the demo county, dropped at
the end. `--calls` phone-ins, one elder each, at `--rate` per second: POST /api/alerts by the
county operator, timed from just before the request to the endpoint's `date_created` of the
alert's first dispatch SMS (the same clock: one machine). The request's own round trip (the
alert raised, ranked and step 0 written, in one transaction) is printed beside it.

Figures measured are in README.md ("Phone-in alerts"); the machine's load is printed first.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from bench_outbox import (
    _run_outbox_worker,
    _serve_sandbox,
    create_database,
    drop_database,
    percentile,
    resolve_all,
    sandbox_seen,
    seed,
)
from sqlalchemy import select
from sqlmodel import col

import alert_service.intake  # noqa: F401  (registers every table with SQLAlchemy)


def _serve_web(db_url: str, port_queue: Any) -> None:
    from anxin.app import create_app
    from anxin.db import make_engine, make_sessionmaker
    from anxin.logging import configure_logging
    from anxin.settings import Settings

    configure_logging("warning")
    app = create_app(Settings(), make_sessionmaker(make_engine(db_url)))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port_queue.put(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


async def _elder_ids(db_url: str) -> list[int]:
    from anxin.db import make_engine, make_sessionmaker
    from anxin.models import Elder

    engine = make_engine(db_url)
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(select(col(Elder.id)).order_by(col(Elder.id)))
        ids = [i for i in rows.scalars() if i is not None]
    await engine.dispose()
    return ids


async def phone_ins(
    web_url: str, elder_ids: list[int], count: int, rate: float
) -> list[tuple[str, datetime, float]]:
    """POST /api/alerts `count` times; (alert code, when the request left, round trip ms)."""
    async with httpx.AsyncClient(base_url=web_url, timeout=60) as http:
        res = await http.post(
            "/api/auth/token", data={"username": "county", "password": "anxin-county"}
        )
        res.raise_for_status()
        auth = {"Authorization": f"Bearer {res.json()['access_token']}"}
        done: list[tuple[str, datetime, float]] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            body = {
                "elder_id": elder_ids[i % len(elder_ids)],
                "kind": "other",
                "caller": "relative",
            }
            sent, t0 = datetime.now(UTC), time.perf_counter()
            res = await http.post("/api/alerts", headers=auth, json=body)
            res.raise_for_status()
            done.append((res.json()["alert"]["code"], sent, (time.perf_counter() - t0) * 1000))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--rate", type=float, default=5.0, help="phone-ins per second")
    parser.add_argument("--homes", type=int, default=200)
    args = parser.parse_args()

    from anxin.logging import configure_logging

    configure_logging("warning")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    sandbox = ctx.Process(target=_serve_sandbox, args=(ports,), daemon=True)
    sandbox.start()
    sms_url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    name, db_url = asyncio.run(create_database())
    procs: list[Any] = [sandbox]
    try:
        asyncio.run(seed(db_url, args.homes))
        elder_ids = asyncio.run(_elder_ids(db_url))
        if args.calls > len(elder_ids):
            raise SystemExit(f"--calls {args.calls} > {len(elder_ids)} elders: one alert each")
        web = ctx.Process(target=_serve_web, args=(db_url, ports), daemon=True)
        web.start()
        procs.append(web)
        web_url = f"http://127.0.0.1:{ports.get(timeout=60)}"
        worker = ctx.Process(target=_run_outbox_worker, args=(db_url, sms_url, True, 3600.0))
        worker.start()
        procs.append(worker)
        time.sleep(2.0)  # the worker connects and LISTENs
        calls = asyncio.run(phone_ins(web_url, elder_ids, args.calls, args.rate))
        deadline = time.time() + 60
        first: dict[str, datetime] = {}
        while len(first) < len(calls) and time.time() < deadline:
            for message in asyncio.run(sandbox_seen(sms_url)):
                for code, _, _ in calls:
                    if f"】{code} " in message["body"] and code not in first:
                        first[code] = datetime.fromisoformat(message["date_created"])
            time.sleep(0.5)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        assert len(first) == len(calls), f"{len(first)} of {len(calls)} call-out SMS seen"
        to_sms = [(first[code] - sent).total_seconds() * 1000 for code, sent, _ in calls]
        trips = [trip for _, _, trip in calls]
        for what, ms in (
            ("phone-in request → first call-out SMS at the endpoint", to_sms),
            ("phone-in request round trip (alert, ranking, step 0)", trips),
        ):
            print(
                f"{what}, {len(ms)} phone-ins at {args.rate:g}/s, {args.homes} homes: "
                f"p50 {percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} ms, "
                f"max {max(ms):.0f} ms"
            )
        asyncio.run(resolve_all(db_url))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.join(10)
        asyncio.run(drop_database(name))


if __name__ == "__main__":
    main()
