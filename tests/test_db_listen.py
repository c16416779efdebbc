"""The roles' LISTEN connection outlives the database server it was opened on (issue 16): after
a restart (or a failover, which moves the primary) a NOTIFY still wakes the listener, so a
watcher or an outbox worker is woken by a new alert or SMS at once rather than at its next poll,
for the rest of its life. Real Postgres of our own, restarted with pg_ctl."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from anxin.db import listening, make_engine, make_sessionmaker, transaction
from device_sim.harness import OwnPostgres
from tests.support.harness import eventually

CHANNEL = "anxin_test_relisten"


async def test_a_notify_after_the_server_restarted_still_wakes_the_listener(
    tmp_path: Path,
) -> None:
    postgres = OwnPostgres(tmp_path / "pg")
    url = await postgres.start()
    engine = make_engine(url)
    wakeups = 0

    def woken() -> None:
        nonlocal wakeups
        wakeups += 1

    async def notify() -> bool:
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                await session.execute(text(f"NOTIFY {CHANNEL}"))
        except Exception:
            return False  # the pool's connections to the old server: pre-ping replaces them
        return True

    try:
        async with listening(make_sessionmaker(engine), CHANNEL, woken) as listens:
            assert listens
            await eventually(notify, what="a NOTIFY sent")
            await eventually(lambda: _true(wakeups >= 1), what="the first wake-up")

            await postgres.restart(down_s=0.5)
            # Listening again, it wakes the caller once (a NOTIFY may have been missed)…
            await eventually(lambda: _true(wakeups >= 2), timeout=60, what="listening again")
            before = wakeups
            # …and a NOTIFY on the restarted server reaches it.
            await eventually(notify, timeout=60, what="a NOTIFY after the restart")
            await eventually(lambda: _true(wakeups > before), what="woken after the restart")
    finally:
        await engine.dispose()
        await postgres.close()


async def _true(condition: bool) -> bool | None:
    return True if condition else None
