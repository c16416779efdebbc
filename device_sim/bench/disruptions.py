"""What the bench does to the platform under load: a township's power cut, one home's
flood of SOS presses, a role killed (SIGKILL) and started again, or the bench's own broker
or database restarted."""

from __future__ import annotations

import asyncio
import time
import uuid

from rich.console import Console
from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import Alert
from anxin.db import SessionMaker
from device_sim.bench.platform import RoleProcesses, Target
from device_sim.bench.report import FloodFigures, PowerCutFigures
from device_sim.harness import (
    OwnMosquitto,
    OwnPostgres,
)
from device_sim.homes import SimHome
from device_sim.region.plan import RegionPlan
from gateway.models import Event


def elders_of_township(plan: RegionPlan, township: str) -> set[str]:
    villages = {v.code for v in plan.villages if v.parent_code == township}
    if not villages:
        raise ValueError(
            f"no township {township!r} in this region; there are "
            + ", ".join(t.code for t in plan.townships)
        )
    return {e.code for e in plan.elders if e.village_code in villages}


async def cut_power(homes: list[SimHome], at: float, township: str, console: Console) -> None:
    """As in device_sim.scenario.player: each hub reports `power_lost` on its battery, then every
    home's modem goes down without a DISCONNECT (the broker publishes the last wills)."""
    await asyncio.sleep(at)
    console.print(f"[yellow]power cut: {len(homes)} homes of {township} at {at:g} s[/]")
    reports = [
        asyncio.create_task(
            h.send_event(h.device("hub").device_id, "power_lost", give_up_after_s=8)
        )
        for h in homes
        if h.has("hub")
    ]
    # The hub's battery lasts a few seconds of resending; then the lights go out.
    await asyncio.wait(reports, timeout=8) if reports else None
    for task in reports:
        task.cancel()
    await asyncio.gather(*reports, return_exceptions=True)
    for home in homes:
        await home.close(lose_power=True)


async def power_cut_figures(
    sessions: SessionMaker, homes: list[SimHome], township: str, at: float
) -> PowerCutFigures:
    """What the platform made of the cut: the hubs' `power_lost` events, and the hubs it took
    offline from their last wills (waiting up to half a minute: the gateway lets a burst of
    statuses settle before it believes them)."""
    from anxin.models import Device

    hubs = [h.device("hub").device_id for h in homes if h.has("hub")]
    lost = offline = 0
    for _ in range(60):
        async with sessions() as session:
            lost = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(col(Event.device_id).in_(hubs), col(Event.type) == "power_lost")
                )
                or 0
            )
            offline = int(
                await session.scalar(
                    select(func.count())
                    .select_from(Device)
                    .where(col(Device.id).in_(hubs), ~col(Device.online))
                )
                or 0
            )
        if offline >= len(hubs):
            break
        await asyncio.sleep(0.5)
    return PowerCutFigures(township, at, len(homes), len(hubs), lost, offline)


class Flood:
    """One home's SOS button publishing `rate` SOS a second, each with its own event id, at
    QoS 1 and without waiting for acks (a stuck button does not wait)."""

    def __init__(self, home: SimHome, rate: float, seconds: float) -> None:
        self.home = home
        self.device_id = home.device("sos_button").device_id
        self.rate = rate
        self.seconds = seconds
        self.sent: list[str] = []
        self.prefix = f"flood-{uuid.uuid4().hex[:6]}"

    async def run(self) -> None:
        from anxin.schemas import event_json, topic

        started = time.monotonic()
        subject = topic(self.device_id, "event")
        tick = 0.01
        while (elapsed := time.monotonic() - started) < self.seconds:
            due = int(elapsed * self.rate) + 1
            while len(self.sent) < due:
                event_id = f"{self.prefix}-{len(self.sent)}"
                self.home.client.publish_nowait(subject, event_json(event_id, "sos"), 1)
                self.sent.append(event_id)
            await asyncio.sleep(tick)

    async def figures(self, sessions: SessionMaker) -> FloodFigures:
        """What reached the platform is in the database: wait (at most a minute) until the
        flood's backlog has settled, then count its events and its alerts."""
        last: tuple[int, int, int] | None = None
        for round_ in range(120):
            async with sessions() as session:
                stored = int(
                    await session.scalar(
                        select(func.count())
                        .select_from(Event)
                        .where(
                            col(Event.device_id) == self.device_id,
                            col(Event.event_id).like(f"{self.prefix}-%"),
                        )
                    )
                    or 0
                )
                counts = (
                    (
                        await session.execute(
                            select(col(Alert.trigger_count)).where(
                                col(Alert.device_id) == self.device_id, col(Alert.kind) == "sos"
                            )
                        )
                    )
                    .scalars()
                    .all()
                )
            now = (stored, len(counts), int(sum(counts)))
            if now == last and (stored >= len(self.sent) or round_ > 10):
                break
            last = now
            await asyncio.sleep(0.5)
        assert last is not None
        return FloodFigures(
            device_id=self.device_id,
            rate_per_s=self.rate,
            seconds=self.seconds,
            sent=len(self.sent),
            stored=last[0],
            alerts=last[1],
            trigger_count=last[2],
        )


async def fault_at(target: Target, role: str, at: float, console: Console) -> None:
    await asyncio.sleep(at)
    await inject_fault(target.roles, target.postgres, target.mosquitto, role, console)


async def inject_fault(
    roles: RoleProcesses | None,
    postgres: OwnPostgres | None,
    mosquitto: OwnMosquitto | None,
    target: str,
    console: Console | None = None,
) -> None:
    """Kill a role (all its replicas, or `role#n`) with SIGKILL and start it again one second
    later; or restart the bench's own Mosquitto (SIGTERM) or Postgres (pg_ctl stop -m fast)."""

    def say(text: str) -> None:
        if console is not None:
            console.print(f"[yellow]fault: {text}[/]")

    if target == "mosquitto":
        if mosquitto is None:
            raise ValueError("a mosquitto fault needs the bench's own broker")
        say("restarting Mosquitto")
        await mosquitto.restart()
        say("Mosquitto is back")
    elif target == "postgres":
        if postgres is None:
            raise ValueError("a postgres fault needs the bench's own Postgres")
        say("restarting Postgres")
        await postgres.restart()
        say("Postgres is back")
    else:
        if roles is None:
            raise ValueError("--fault needs the roles as subprocesses (not --external)")
        say(f"killing {target} (SIGKILL)")
        await roles.restart(target)
        say(f"{target} started again")
