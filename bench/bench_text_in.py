"""Text-in benchmark (issue 20 item 2): a guardian's help SMS received (the webhook POST) → the
first call-out SMS request at the Twilio-compatible endpoint.

    .venv/bin/python bench/bench_text_in.py [--texts 100] [--rate 5] [--homes 120]

A scratch database (as bench_outbox.py: ANXIN_BENCH_DATABASE_URL, Alembic, dropped at the end)
with the demo county; each of `--texts` elders gets a guardian number of its own. The sandbox,
the web app (its signed /twilio/inbound) and one outbox worker (`run_outbox`, LISTEN/NOTIFY)
run in their own processes. The texts are POSTed one by one at `--rate` per second, signed as
Twilio signs; each raises a P1 whose ranking and step 0 are written in the webhook's
transaction. Reported: p50/p99/max from just before the POST to the moment the endpoint saw
that alert's call-out SMS, and the POST's own answer time, with the load average.

Measured 2026-12-03 on the shared 2-core machine, load average 7.3-9.2 (other sessions' tests
running), 120 texts at 5/s, 150 homes: received → first call-out SMS p50 261 ms, p99 2,002 ms,
max 3,710 ms; the webhook's answer (ranking and step 0 in its transaction) p50 191 ms, p99 957 ms.
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
    ACCOUNT,
    FROM,
    TOKEN,
    _run_outbox_worker,
    _serve_sandbox,
    create_database,
    drop_database,
    percentile,
    sandbox_seen,
    seed,
)
from sqlalchemy import select, update
from sqlmodel import col

import alert_service.intake  # noqa: F401  (registers every table with SQLAlchemy)


def _serve_web(db_url: str, port_queue: Any) -> None:
    from pydantic import SecretStr

    from anxin.app import create_app
    from anxin.db import make_engine, make_sessionmaker
    from anxin.logging import configure_logging
    from anxin.settings import Settings

    configure_logging("warning")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=SecretStr(TOKEN),
        twilio_from=FROM,
        public_url=f"http://127.0.0.1:{port}",
    )
    app = create_app(settings, make_sessionmaker(make_engine(db_url)))
    port_queue.put(port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def guardian(i: int) -> str:
    return f"+86137{i:08d}"


async def give_guardians(db_url: str, count: int) -> list[int]:
    from anxin.db import make_engine, make_sessionmaker, transaction
    from anxin.models import Elder

    engine = make_engine(db_url)
    async with transaction(make_sessionmaker(engine)) as session:
        rows = await session.execute(select(col(Elder.id)).order_by(col(Elder.id)))
        ids = [elder_id for elder_id in rows.scalars() if elder_id is not None][:count]
        assert len(ids) == count, f"only {len(ids)} elders: raise --homes"
        for i, elder_id in enumerate(ids):
            await session.execute(
                update(Elder).where(col(Elder.id) == elder_id).values(guardian_phones=[guardian(i)])
            )
    await engine.dispose()
    return ids


async def send_texts(web_url: str, count: int, rate: float) -> list[tuple[str, datetime, float]]:
    """POST each help text; (its guardian's number, when the POST started, its answer ms)."""
    from dispatcher.twilio_provider import sign_twilio_request

    url = web_url + "/twilio/inbound"
    sent: list[tuple[str, datetime, float]] = []
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=60) as http:
        start = loop.time()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            form = {
                "From": guardian(i),
                "To": FROM,
                "Body": "救命",
                "MessageSid": f"SMbench{i:026d}",
            }
            headers = {"X-Twilio-Signature": sign_twilio_request(TOKEN, url, form)}
            at, began = datetime.now(UTC), time.perf_counter()
            res = await http.post(url, data=form, headers=headers)
            assert res.status_code == 200, res.text
            sent.append((guardian(i), at, (time.perf_counter() - began) * 1000))
    return sent


async def codes_by_guardian(db_url: str, elder_ids: list[int]) -> dict[str, str]:
    from alert_service.models import Alert
    from anxin.db import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    async with make_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(col(Alert.elder_id), col(Alert.id)).where(col(Alert.source) == "text_in")
        )
        by_elder = {elder_id: f"A{alert_id}" for elder_id, alert_id in rows}
    await engine.dispose()
    return {guardian(i): by_elder[e] for i, e in enumerate(elder_ids) if e in by_elder}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="texts POSTed per second")
    parser.add_argument("--homes", type=int, default=120)
    args = parser.parse_args()

    from anxin.logging import configure_logging

    configure_logging("warning")
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    sandbox = ctx.Process(target=_serve_sandbox, args=(ports,), daemon=True)
    sandbox.start()
    sandbox_url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    name, db_url = asyncio.run(create_database())
    procs: list[Any] = []
    try:
        asyncio.run(seed(db_url, args.homes))
        elder_ids = asyncio.run(give_guardians(db_url, args.texts))
        web = ctx.Process(target=_serve_web, args=(db_url, ports), daemon=True)
        web.start()
        procs.append(web)
        web_url = f"http://127.0.0.1:{ports.get(timeout=60)}"
        worker = ctx.Process(target=_run_outbox_worker, args=(db_url, sandbox_url, True, 0.2))
        worker.start()
        procs.append(worker)
        time.sleep(3.0)  # the web app and the worker connect; the worker LISTENs
        print(f"load average before: {load()} ({os.cpu_count()} cores)")
        sent = asyncio.run(send_texts(web_url, args.texts, args.rate))
        codes = asyncio.run(codes_by_guardian(db_url, elder_ids))
        assert len(codes) == args.texts, f"{len(codes)} of {args.texts} texts raised an alert"
        deadline = time.time() + 60
        while True:
            first: dict[str, datetime] = {}
            for message in asyncio.run(sandbox_seen(sandbox_url)):
                for code in codes.values():
                    if f"】{code} " in message["body"] and code not in first:
                        first[code] = datetime.fromisoformat(message["date_created"])
            if len(first) == len(codes) or time.time() > deadline:
                break
            time.sleep(0.5)
        assert len(first) == len(codes), f"{len(first)} of {len(codes)} call-outs seen"
        ms = [(first[codes[phone]] - at).total_seconds() * 1000 for phone, at, _ in sent]
        answers = [answer for _, _, answer in sent]
        print(
            f"text-in SMS received → first call-out SMS at the sandbox, {args.texts} texts at "
            f"{args.rate:g}/s: p50 {percentile(ms, 0.5):.0f} ms, p99 {percentile(ms, 0.99):.0f} "
            f"ms, max {max(ms):.0f} ms; the webhook's answer p50 {percentile(answers, 0.5):.0f} "
            f"ms, p99 {percentile(answers, 0.99):.0f} ms"
        )
        print(f"load average after: {load()}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)
        asyncio.run(drop_database(name))


if __name__ == "__main__":
    main()
