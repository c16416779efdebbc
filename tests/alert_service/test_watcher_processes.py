"""Durable timers across OS processes: two watchers over 1,000 alerts do every step exactly
once; a watcher killed mid-ladder (SIGKILL) and restarted resumes where the ladder was.

The watchers run `python -m tests.support.watcher_process` against the test's Postgres,
all reading one clock file that the test moves forward. Nothing sleeps for a time rule: the
test sets the clock, then waits until no alert is due any more.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col

from alert_service import ladder as alert_ladder
from alert_service.models import Alert, AlertTimelineEntry, DispatchAttempt
from anxin.db import SessionMaker, transaction
from anxin.models import Elder, Responder
from dispatcher.models import SmsMessage
from tests import builders
from tests.support.harness import Seeded, eventually
from tests.support.watcher_process import set_time

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
KINDS = (
    "sos",
    "fall",
    "smoke",
    "gas",
    "inactivity",
    "water_leak",
    "door_open",
    "vitals",
    "bed_exit",
)
AIDE_ETAS = (4.0, 5.0, 6.0)  # all three aides could make it: the classic ladder


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


@dataclass(frozen=True)
class Cast:
    aides: tuple[int, int, int]
    centre: int
    county: int


async def _cast(sessions: SessionMaker) -> Cast:
    async with sessions() as session:
        aides = (
            await session.execute(
                select(col(Responder.id))
                .where(col(Responder.kind) == "aide")
                .order_by(col(Responder.id))
                .limit(3)
            )
        ).scalars()
        centre = (
            await session.execute(
                select(col(Responder.id)).where(col(Responder.kind) == "township_centre").limit(1)
            )
        ).scalar_one()
        county = (
            await session.execute(
                select(col(Responder.id)).where(col(Responder.kind) == "county_centre").limit(1)
            )
        ).scalar_one()
    a, b, c = (x for x in aides if x is not None)
    assert centre is not None and county is not None
    return Cast((a, b, c), centre, county)


async def _open_alerts(sessions: SessionMaker, count: int, cast: Cast) -> list[int]:
    """`count` open P1 alerts raised at T0 whose step 0 is due: the watchers do every step."""
    ranking = [
        {"responder_id": r, "kind": "aide", "name": "", "distance_km": 1.0, "eta_minutes": eta}
        for r, eta in zip(cast.aides, AIDE_ETAS, strict=True)
    ] + [
        {"responder_id": cast.centre, "kind": "township_centre", "eta_minutes": 12.0},
        {"responder_id": cast.county, "kind": "county_centre", "eta_minutes": 25.0},
    ]
    async with transaction(sessions) as session:
        elders = (
            await session.execute(
                select(col(Elder.id), col(Elder.village_id)).order_by(col(Elder.id))
            )
        ).all()
        rows = [
            {
                "elder_id": elder_id,
                "village_id": village_id,
                "kind": kind,
                "priority": 1,
                "status": "raised",
                "raised_at": T0,
                "respond_by": minutes(15),
                "trigger_count": 1,
                "last_trigger_at": T0,
                "at_risk": False,
                "breached": False,
                "cancel_requested": False,
                "call_120": False,
                "ladder": builders.ladder().snapshot(),
                "ranking": ranking,
                "note": "",
                "next_check_at": T0,
                # ranked as it was raised: this test is about the ladder's steps
                "ranked_at": T0,
            }
            for kind in KINDS
            for elder_id, village_id in elders
        ][:count]
        assert len(rows) == count
        ids = (await session.execute(insert(Alert).values(rows).returning(col(Alert.id)))).scalars()
        return sorted(i for i in ids if i is not None)


class Watchers:
    """Watcher processes on one clock file."""

    def __init__(self, database_url: str, clock_file: Path) -> None:
        self.database_url = database_url
        self.clock_file = clock_file
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.watcher_process",
            self.database_url,
            str(self.clock_file),
            "20",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line.strip() == b"ready", line
        self.processes.append(process)
        return process

    async def stop(self, process: asyncio.subprocess.Process) -> int:
        """SIGTERM; returns how many due rows that process handled."""
        process.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        self.processes.remove(process)
        return int(out.decode().split()[-1])

    async def kill(self, process: asyncio.subprocess.Process) -> None:
        process.send_signal(signal.SIGKILL)
        await process.wait()
        self.processes.remove(process)

    async def close(self) -> None:
        for process in list(self.processes):
            await self.kill(process)


@asynccontextmanager
async def watchers(database_url: str, tmp_path: Path) -> AsyncIterator[Watchers]:
    clock_file = tmp_path / "clock"
    set_time(clock_file, T0 - timedelta(seconds=1))
    running = Watchers(database_url, clock_file)
    try:
        yield running
    finally:
        await running.close()


async def _due(sessions: SessionMaker, now: datetime) -> int:
    async with sessions() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).select_from(Alert).where(col(Alert.next_check_at) <= now)
                )
            ).scalar_one()
        )


async def _run_to(sessions: SessionMaker, running: Watchers, when: datetime) -> None:
    """Move every watcher's clock to `when` and wait until nothing is due any more."""
    set_time(running.clock_file, when)

    async def settled() -> bool:
        return await _due(sessions, when) == 0

    await eventually(settled, timeout=60, what=f"the watchers to finish {when:%H:%M:%S}")


async def _reply(
    sessions: SessionMaker, alert_ids: Iterable[int], what: str, responder: int, now: datetime
) -> None:
    async with transaction(sessions) as session:
        for alert_id in alert_ids:
            alert = await alert_ladder.lock_alert(session, alert_id)
            assert alert is not None
            if what == "accept":
                assert await alert_ladder.accept(
                    session, alert, responder, now, f"responder:{responder}"
                )
            else:
                await alert_ladder.decline(session, alert, responder, now, f"responder:{responder}")


async def _history(sessions: SessionMaker) -> dict[int, dict[str, Any]]:
    """Per alert: its attempts, timeline actions and SMS, as an operator would read them."""
    out: dict[int, dict[str, Any]] = {}
    async with sessions() as session:
        for alert in (await session.execute(select(Alert))).scalars():
            assert alert.id is not None
            out[alert.id] = {
                "attempts": [],
                "timeline": Counter(),
                "sms": Counter(),
                "at_risk": alert.at_risk,
                "breached": alert.breached,
            }
        for a in (
            await session.execute(select(DispatchAttempt).order_by(col(DispatchAttempt.step)))
        ).scalars():
            out[a.alert_id]["attempts"].append((a.responder_id, a.role, a.asked_at, a.answer))
        for t in (await session.execute(select(AlertTimelineEntry))).scalars():
            out[t.alert_id]["timeline"][(t.at, t.action)] += 1
        for m in (await session.execute(select(SmsMessage))).scalars():
            assert m.alert_id is not None
            out[m.alert_id]["sms"][(m.purpose, m.responder_id)] += 1
    return out


def _expected_unanswered(cast: Cast) -> dict[str, Any]:
    a1, a2, a3 = cast.aides
    return {
        "attempts": [
            (a1, "aide", T0, "timed_out"),
            (a2, "aide", minutes(3), "timed_out"),
            (a3, "aide", minutes(6), "timed_out"),
            (cast.centre, "township_centre", minutes(8), "timed_out"),
            (cast.county, "county_centre", minutes(11), "pending"),
        ],
        "timeline": Counter(
            {
                (T0, "asked"): 1,
                (minutes(3), "no_answer"): 1,
                (minutes(3), "asked"): 1,
                (minutes(6), "no_answer"): 1,
                (minutes(6), "asked"): 1,
                (minutes(8), "at_risk"): 1,
                (minutes(8), "asked"): 1,
                (minutes(9), "no_answer"): 1,
                (minutes(11), "no_answer"): 1,  # the township centre, after 3 minutes
                (minutes(11), "asked"): 1,
                (minutes(15), "breached"): 1,
            }
        ),
        "sms": Counter({("dispatch", r): 1 for r in (a1, a2, a3, cast.centre, cast.county)}),
        "at_risk": True,
        "breached": True,
    }


def _expected_taken_but_late(cast: Cast) -> dict[str, Any]:
    a1 = cast.aides[0]
    return {
        # Taken at T0+1 by the aide 4 minutes away, who never reports arrival.
        "attempts": [
            (a1, "aide", T0, "accepted"),
            (cast.county, "county_centre", minutes(15), "pending"),
        ],
        "timeline": Counter(
            {
                (T0, "asked"): 1,
                (minutes(1), "accepted"): 1,
                (minutes(7), "reminded"): 1,  # 1 + 4 minutes' travel + 2 minutes' grace
                (minutes(7), "at_risk"): 1,
                (minutes(15), "breached"): 1,
                (minutes(15), "asked"): 1,
            }
        ),
        "sms": Counter({("dispatch", a1): 1, ("reminder", a1): 1, ("dispatch", cast.county): 1}),
        "at_risk": True,
        "breached": True,
    }


# Every moment something is due on these two ladders.
STEP_TIMES = (0, 3, 6, 7, 8, 9, 11, 15)


async def test_two_watcher_processes_over_1000_alerts_do_every_step_exactly_once(
    region: Seeded, database_url: str, tmp_path: Path
) -> None:
    sessions = region.sessions
    cast = await _cast(sessions)
    alert_ids = await _open_alerts(sessions, 1000, cast)
    taken = set(alert_ids[1::3])  # a third are taken at T0+1 by the nearest aide
    async with watchers(database_url, tmp_path) as running:
        first, second = await running.start(), await running.start()
        for n in STEP_TIMES:
            if n == 3:
                # The aides' replies at T0+1 (between two watcher steps).
                set_time(running.clock_file, minutes(1))
                await _reply(sessions, sorted(taken), "accept", cast.aides[0], minutes(1))
            await _run_to(sessions, running, minutes(n))
        await _run_to(sessions, running, minutes(30))  # long after: nothing more happens
        handled = [await running.stop(first), await running.stop(second)]

    # Both processes did a share of the work, and between them every step exactly once.
    assert all(n > 0 for n in handled), handled
    history = await _history(sessions)
    unanswered, late = _expected_unanswered(cast), _expected_taken_but_late(cast)
    wrong = {
        alert_id: got
        for alert_id, got in history.items()
        if got != (late if alert_id in taken else unanswered)
    }
    assert not wrong, f"{len(wrong)} alerts differ, e.g. {next(iter(wrong.items()))}"
    async with sessions() as session:
        duplicates = (
            await session.execute(
                text(
                    "SELECT count(*) FROM (SELECT alert_id, step FROM dispatch_attempts "
                    "GROUP BY alert_id, step HAVING count(*) > 1) d"
                )
            )
        ).scalar_one()
    assert duplicates == 0


async def test_a_watcher_killed_mid_ladder_resumes_where_it_was(
    region: Seeded, database_url: str, tmp_path: Path
) -> None:
    sessions = region.sessions
    cast = await _cast(sessions)
    alert_ids = await _open_alerts(sessions, 250, cast)
    async with watchers(database_url, tmp_path) as running:
        process = await running.start()
        await _run_to(sessions, running, T0)

        # T0+3: the second aides are being asked. Kill -9 as soon as some are committed, while
        # the watcher is most likely in the middle of its next batch.
        set_time(running.clock_file, minutes(3))

        async def some_progress() -> bool:
            return await _due(sessions, minutes(3)) < len(alert_ids)

        await eventually(some_progress, timeout=60, what="the watcher to start on T0+3")
        await running.kill(process)
        left = await _due(sessions, minutes(3))
        # What was committed is whole; what was not left no trace (no SMS without its attempt).
        history = await _history(sessions)
        for got in history.values():
            asked = sum(n for (_, action), n in got["timeline"].items() if action == "asked")
            assert asked == len(got["attempts"]) == sum(got["sms"].values())

        # A new watcher (the old one is gone for good) carries on from there.
        await running.start()
        await _run_to(sessions, running, minutes(3))
        for n in STEP_TIMES[2:]:
            await _run_to(sessions, running, minutes(n))

    history = await _history(sessions)
    expected = _expected_unanswered(cast)
    wrong = [alert_id for alert_id, got in history.items() if got != expected]
    assert not wrong, f"{len(wrong)} alerts differ after the restart ({left} were left at kill)"
