"""`anxin bench --fault-suite`: crashes and restarts under a burst of SOS, counted exactly.

Every role runs as its own processes (gateway ×2 on a shared subscription, watcher ×2,
dispatcher ×2, web) against a Postgres and a Mosquitto of the suite's own, so it can restart
them without touching the machine's shared ones. Then, scenario by scenario, a burst of SOS
(default 2,000 from 500 homes: each home presses 4 times, distinct event ids) while one fault
happens: no fault (baseline), each role SIGKILLed and started again, Mosquitto restarted,
Postgres restarted.

What must hold after each scenario, and how it is counted exactly:

* every press is stored once and acked, and belongs to its home's one alert: a home's repeated
  presses while its alert is open join it, so a scenario expects exactly one alert per home,
  with a trigger count equal to that home's presses;
* every alert got exactly one call-out SMS per ladder step, no step missing. The steps an alert
  should have had come from the pure ladder (`alert_service.rules.plan`) replayed on the alert's
  own ranking and ladder, with nobody answering: the suite's region has a short accept timeout
  (aide 1 at once, aide 2 one timeout later, aide 3 at two, then the township centre). Acting
  as the operator, the suite confirms aide 2 as taking the alert once aides 1 and 2 have had
  their call-outs (the Twilio-compatible sandbox, served here, sees every SMS the platform
  sends), which stops the ladder, and closes the alert once all of its home's presses are
  acked. A step the ladder makes later than required (aide 3 when the confirmation itself came
  late) is allowed once; any second call-out to the same responder for the same alert, or one
  to a responder the ladder would not have asked by then, is a duplicate;
* the max delay is the longest wait from an elder's first press to the first call-out.

A scenario's burst is days of a county's SOS in seconds: its roles run with the carriers' daily
limit per number (`ANXIN_SMS_DAILY_LIMIT`) out of reach, or the township centres' duty phones
would reach it within the burst and the ladder would rightly move on to the county, which is
not what the suite checks (the limit has its own tests, tests/dispatcher). Between scenarios
the SMS and dispatch history is moved a day back all the same (the aides' dispatch counts of
the day feed the ranking; each scenario plays a day of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select, text
from sqlmodel import col

from alert_service.models import Alert
from anxin.clock import SystemClock
from anxin.db import SessionMaker, make_sessionmaker, migrate, transaction
from anxin.logging import get_logger
from anxin.models import Responder
from anxin.mqtt import BrokerAddress
from device_sim.bench.disruptions import inject_fault
from device_sim.bench.platform import RoleProcesses, raise_file_limit, spawned_roles
from device_sim.faults.counting import count_scenario, other_alerts
from device_sim.faults.options import SuiteOptions
from device_sim.faults.oracle import Step, expected_steps
from device_sim.faults.report import ScenarioResult, SuiteReport
from device_sim.faults.state import HomeTrack, SuitePlatform
from device_sim.harness import OwnMosquitto, OwnPostgres, engine_for
from device_sim.homes import SimDevice, SimHome
from device_sim.region.generate import generate_region
from device_sim.region.plan import RegionPlan
from device_sim.scenario.model import ALERT_CODE
from device_sim.scenario.player import seed_plan
from dispatcher.twilio_sandbox import SandboxMessage

log = get_logger("device_sim.faults")


# --- the suite ------------------------------------------------------------------------------


def _is_callout(message: SandboxMessage) -> bool:
    return "回1" in message.body or "Reply 1" in message.body


async def run_fault_suite(
    options: SuiteOptions,
    *,
    console: Console | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> SuiteReport:
    console = console or Console()
    started = time.monotonic()
    raise_file_limit()
    plan = generate_region(options.homes, options.seed)
    results: list[ScenarioResult] = []
    async with contextlib.AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anxin-faults-")))
        with console.status("starting Postgres, Mosquitto and every role…"):
            postgres = OwnPostgres(workdir / "pg")
            mosquitto = OwnMosquitto(workdir / "mosquitto")
            url, _ = await asyncio.gather(postgres.start(), mosquitto.start())
            stack.push_async_callback(postgres.close)
            stack.push_async_callback(mosquitto.stop)
        platform = await start_suite_platform(
            stack, url, postgres, mosquitto, plan, options, console
        )
        roles = platform.roles
        setup_s = time.monotonic() - started
        console.print(
            f"platform up in {setup_s:.0f} s: {len(platform.homes)} homes, roles "
            + ", ".join(f"{r}×{n}" for r, n in roles.replicas.items())
            + f" (logs in {roles.log_dir})"
        )
        for name in options.scenarios:
            result = await run_scenario(platform, options, name, console)
            results.append(result)
            if on_result is not None:
                on_result(result)
            await _next_day(platform.sessions)
    return SuiteReport(
        homes=options.homes,
        presses_per_scenario=options.presses,
        replicas=dict(options.replicas),
        scenarios=results,
        setup_s=round(setup_s, 1),
        wall_s=round(time.monotonic() - started, 1),
    )


async def start_suite_platform(
    stack: contextlib.AsyncExitStack,
    url: str,
    postgres: OwnPostgres,
    mosquitto: OwnMosquitto,
    plan: RegionPlan,
    options: SuiteOptions,
    console: Console,
) -> SuitePlatform:
    """The suite's platform on a started database (`url`) and broker: migrated and seeded,
    every role a process, the homes connected; each is stopped when `stack` closes. The
    fault suite and the failover suite (a Patroni cluster in the Postgres slot) share it."""
    with console.status("migrating, seeding and starting every role…"):
        await migrate(url)
        engine = await stack.enter_async_context(engine_for(url))
        sessions = make_sessionmaker(engine)
        await seed_plan(sessions, plan)
        await prepare_region(sessions, options)
        sandbox, roles = await stack.enter_async_context(
            spawned_roles(
                url,
                mosquitto.url,
                options.replicas,
                extra_env={"ANXIN_SMS_DAILY_LIMIT": "100000"},
            )
        )
        async with sessions() as session:
            phone_of = {
                int(r.id): r.phone
                for r in (await session.execute(select(Responder))).scalars()
                if r.id is not None
            }
    homes = await connect_homes(plan, BrokerAddress.parse(mosquitto.url), console)
    stack.push_async_callback(close_homes, homes)
    return SuitePlatform(postgres, mosquitto, sessions, sandbox, roles, plan, homes, phone_of)


async def prepare_region(sessions: SessionMaker, options: SuiteOptions) -> None:
    """The suite's ladder (a short accept timeout, two aides), and a fleet that is known,
    online and not expected to heartbeat during the run: the suite is about the alert chain;
    liveness has its own tests (and a silent fleet would raise offline alerts mid-run)."""
    # Three aides one accept timeout apart, then the township centre: the suite requires
    # aides 1 and 2 before it closes an alert, and the third aide gives a slow platform
    # slack before the ladder reaches the centres (three duty phones for 500 homes would hit
    # the carriers' daily limit per number within one scenario).
    # No voice call-outs: the suite's oracle counts what the SMS ladder asks, and an unanswered
    # night call would move it on early; calls' once-only sending has its own crash tests
    # (tests/dispatcher/test_voice_crash.py), and the clock of day must not change the suite.
    ladder = json.dumps(
        {"accept_timeout_s": options.accept_timeout_s, "max_aides": 3, "voice_priorities": []}
    )
    async with transaction(sessions) as session:
        await session.execute(text("UPDATE regions SET ladder = CAST(:l AS json)"), {"l": ladder})
        await session.execute(
            text(
                "UPDATE devices SET heartbeat_interval_s = 86400, online = true, "
                "last_seen_at = now(), offline_after = now() + interval '3 days'"
            )
        )


async def connect_homes(
    plan: RegionPlan, address: BrokerAddress, console: Console
) -> list[SimHome]:
    by_elder: dict[str, list[SimDevice]] = defaultdict(list)
    for d in plan.devices:
        by_elder[d.elder_code].append(SimDevice(d.device_id, d.kind.value, d.password))
    homes = [
        SimHome(address, by_elder[e.code], name=e.code, resend_after_s=5.0) for e in plan.elders
    ]
    slots = asyncio.Semaphore(100)

    async def connect(home: SimHome) -> None:
        async with slots:
            # As a real hub does on every (re)connect: `online`, retained, for each device.
            await home.connect(announce=True)

    with console.status(f"connecting {len(homes)} homes…"):
        await asyncio.gather(*(connect(h) for h in homes))
    return homes


async def close_homes(homes: list[SimHome]) -> None:
    await asyncio.gather(*(h.close(say_offline=False) for h in homes), return_exceptions=True)


async def _next_day(sessions: SessionMaker) -> None:
    """Every SMS and dispatch so far moves a day back: the next scenario is a day of its own
    for the per-number daily SMS limit and the aides' dispatch counts."""
    for attempt in range(30):
        try:
            async with transaction(sessions) as session:
                await session.execute(
                    text(
                        "UPDATE sms_messages SET sent_at = sent_at - interval '1 day', "
                        "created_at = created_at - interval '1 day'"
                    )
                )
                await session.execute(
                    text("UPDATE dispatch_attempts SET asked_at = asked_at - interval '1 day'")
                )
            return
        except Exception as exc:
            log.warning("suite_next_day_retry", attempt=attempt, error=repr(exc))
            await asyncio.sleep(1)


async def run_scenario(  # noqa: C901 (over the complexity budget: known debt)
    platform: SuitePlatform, options: SuiteOptions, name: str, console: Console
) -> ScenarioResult:
    started = time.monotonic()
    started_at = SystemClock().now()
    tag = f"{name[:4]}{uuid.uuid4().hex[:4]}"
    homes = platform.homes
    per_home, extra = divmod(options.presses, len(homes))
    tracks: list[HomeTrack] = []
    for i, home in enumerate(homes):
        n = per_home + (1 if i < extra else 0)
        if n:
            device = home.device("sos_button").device_id
            tracks.append(HomeTrack(home, device, [f"{tag}-{i}-{k}" for k in range(n)]))
    by_code: dict[str, HomeTrack] = {}
    callouts: Counter[tuple[str, str]] = Counter()  # (alert code, phone)
    first_callout: dict[str, float] = {}
    resends = 0

    def on_sms(message: SandboxMessage) -> None:
        found = ALERT_CODE.search(message.body)
        if found is None or not _is_callout(message):
            return
        code = found.group(0)
        callouts[(code, message.to)] += 1
        first_callout.setdefault(code, time.monotonic())

    unsubscribe = platform.sandbox.subscribe(on_sms)
    # Round after round: every home's k-th press before any home's (k+1)-th.
    order = [
        (t, k)
        for k in range(max(len(t.event_ids) for t in tracks))
        for t in tracks
        if k < len(t.event_ids)
    ]
    sends: list[asyncio.Task[None]] = []

    async def press(track: HomeTrack, event_id: str) -> None:
        nonlocal resends

        def sent(_: str) -> None:
            if track.first_send is None:
                track.first_send = time.monotonic()

        try:
            ack = await track.home.send_event(
                track.device_id,
                "sos",
                event_id=event_id,
                give_up_after_s=options.settle_s,
                on_first_send=sent,
            )
        except TimeoutError:
            return
        resends += ack.sends - 1
        track.acked.add(event_id)
        if ack.alert_id:
            track.alert_codes.add(ack.alert_id)
            by_code[ack.alert_id] = track

    fault_label = "none" if name == "baseline" else _fault_label(name, platform.roles)
    progress = Progress(
        TextColumn(f"[bold]{name:<10}[/]"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    alerts: dict[str, Alert] = {}
    resolved_at: dict[str, datetime] = {}
    required: dict[str, list[Step]] = {}
    with progress:
        task = progress.add_task(name, total=len(tracks) * 2, info="burst")

        async def fault() -> None:
            await asyncio.sleep(options.fault_at * options.burst_s)
            await inject_fault(platform.roles, platform.postgres, platform.mosquitto, name)

        fault_task = asyncio.create_task(fault()) if name != "baseline" else None
        burst_start = time.monotonic()
        for n, (track, k) in enumerate(order):
            due = burst_start + n * options.burst_s / len(order)
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            sends.append(asyncio.create_task(press(track, track.event_ids[k])))
        deadline = time.monotonic() + options.settle_s
        seen: tuple[int, int, int] = (-1, -1, -1)
        last_change = time.monotonic()
        while time.monotonic() < deadline:
            acked = sum(len(t.acked) for t in tracks)
            await _close_ready(platform, options, tracks, alerts, required, resolved_at, callouts)
            done = sum(t.resolved for t in tracks)
            progress.update(
                task,
                completed=sum(len(t.acked) == len(t.event_ids) for t in tracks) + done,
                info=f"{acked}/{len(order)} acked, {len(first_callout)} called out, "
                f"{done}/{len(tracks)} closed",
            )
            if done == len(tracks) and all(s.done() for s in sends):
                break
            now_seen = (acked, sum(callouts.values()), done)
            if now_seen != seen:
                seen, last_change = now_seen, time.monotonic()
            elif time.monotonic() - last_change > options.stall_s:
                break  # no progress at all for a minute: what is missing now stays missing
            await asyncio.sleep(0.5)
        if fault_task is not None:
            await fault_task
        for s in sends:
            s.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
        # Anything still open (a duplicate alert, a home whose steps never came) is closed now,
        # so the next scenario starts clean; it is counted below all the same.
        await _close_leftovers(platform.sessions)
        await asyncio.sleep(1.0)  # a late SMS of a step that should not have been sent
    unsubscribe()
    result = await count_scenario(
        platform,
        _horizon(options),
        name,
        fault_label,
        tracks,
        tag,
        alerts,
        required,
        resolved_at,
        callouts,
        first_callout,
        len(order),
        resends,
        time.monotonic() - started,
    )
    others = await other_alerts(platform.sessions, started_at)
    if others:
        result.notes.append(f"other alerts raised during the scenario: {others}")
    exited = platform.roles.exited()
    if exited:
        result.notes.append(f"replicas that exited on their own: {exited}")
    return result


def _horizon(options: SuiteOptions) -> timedelta:
    """Steps due this long after the alert is raised must all be there before it is closed:
    aide 1 at once, aide 2 one accept timeout later (the township centre would follow at
    two)."""
    return timedelta(seconds=options.accept_timeout_s * 1.5)


def _fault_label(name: str, roles: RoleProcesses) -> str:
    if name in ("mosquitto", "postgres"):
        return f"{name} restarted"
    if "#" in name:
        return f"{name} (one replica) SIGKILLed, restarted 1 s later"
    return f"{name} ×{roles.replicas.get(name, 1)} SIGKILLed, restarted 1 s later"


async def _close_ready(  # noqa: C901 (over the complexity budget: known debt)
    platform: SuitePlatform,
    options: SuiteOptions,
    tracks: list[HomeTrack],
    alerts: dict[str, Alert],
    required: dict[str, list[Step]],
    resolved_at: dict[str, datetime],
    callouts: Counter[tuple[str, str]],
) -> None:
    """Act as the operator. Once the ladder steps an alert must have had (aide 1 at once, aide
    2 one accept timeout later) have reached the phones, the operator confirms the last aide
    asked as taking it (the ladder stops there: nothing more is due for minutes); once every
    press of the home is acked, the operator closes the alert."""
    from alert_service import ladder as alert_ladder

    pending = [t for t in tracks if not t.resolved and t.alert_codes]
    if not pending:
        return
    try:
        wanted = [int(c[1:]) for t in pending for c in t.alert_codes if c not in alerts]
        if wanted:
            async with platform.sessions() as session:
                rows = await session.execute(select(Alert).where(col(Alert.id).in_(wanted)))
                for alert in rows.scalars():
                    # Its steps follow from its ranking: wait until a watcher has ranked it.
                    if alert.ranked_at is not None:
                        alerts[alert.code] = alert
        horizon = _horizon(options)
        taking: list[tuple[HomeTrack, str, int]] = []
        closing: list[HomeTrack] = []
        for t in pending:
            codes = [c for c in t.alert_codes if c in alerts]
            if len(codes) < len(t.alert_codes):
                continue
            complete = True
            for code in codes:
                if code not in required:
                    required[code] = expected_steps(alerts[code], alerts[code].raised_at + horizon)
                steps = required[code]
                if any(
                    callouts[(code, platform.phone_of.get(s.responder_id, ""))] == 0 for s in steps
                ):
                    complete = False
                elif code not in t.taken and steps:
                    taking.append((t, code, steps[-1].responder_id))
            if complete and len(t.acked) == len(t.event_ids):
                closing.append(t)
        if not taking and not closing:
            return
        slots = asyncio.Semaphore(8)

        async def act(code: str, taker: int | None) -> bool:
            """One short transaction per alert, its time read once the row is ours: the
            operator's action happens when it commits, not when the round began. An alert
            a gateway batch or the watcher holds right now is skipped until the next round."""
            async with slots, transaction(platform.sessions) as session:
                locked = (
                    (
                        await session.execute(
                            select(Alert)
                            .where(col(Alert.id) == int(code[1:]))
                            .with_for_update(skip_locked=True)
                        )
                    )
                    .scalars()
                    .first()
                )
                if locked is None:
                    return False
                now = SystemClock().now()
                if taker is not None:
                    await alert_ladder.accept(
                        session, locked, taker, now, actor="operator:fault-suite"
                    )
                else:
                    await alert_ladder.resolve(
                        session, locked, now, actor="operator:fault-suite", outcome="handled"
                    )
                    resolved_at[code] = now
                return True

        took = await asyncio.gather(*(act(code, taker) for _, code, taker in taking))
        for (t, code, _), done in zip(taking, took, strict=True):
            if done:
                t.taken.add(code)
        to_close = [(t, code) for t in closing for code in t.alert_codes]
        closed = await asyncio.gather(*(act(code, None) for _, code in to_close))
        for t in closing:
            t.resolved = all(done for (u, _), done in zip(to_close, closed, strict=True) if u is t)
    except Exception as exc:  # Postgres restarting under us: try again on the next round
        log.info("suite_close_retry", error=repr(exc))


async def _close_leftovers(sessions: SessionMaker) -> None:
    from alert_service import ladder as alert_ladder

    for _ in range(30):
        try:
            async with transaction(sessions) as session:
                rows = await session.execute(
                    select(Alert).where(col(Alert.status) != "resolved").with_for_update()
                )
                now = SystemClock().now()
                for alert in rows.scalars():
                    await alert_ladder.resolve(
                        session, alert, now, actor="operator:fault-suite", outcome="handled"
                    )
            return
        except Exception as exc:
            log.info("suite_close_leftovers_retry", error=repr(exc))
            await asyncio.sleep(1)
