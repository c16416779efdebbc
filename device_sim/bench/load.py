"""The load: N homes on N MQTT connections, heartbeats plus an SOS rate, for `duration`
seconds, then the figures (device_sim/bench/ says what they mean)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import random
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from anxin.logging import get_logger
from anxin.settings import Settings
from device_sim.bench.disruptions import (
    Flood,
    cut_power,
    elders_of_township,
    fault_at,
    power_cut_figures,
)
from device_sim.bench.options import BenchOptions, parse_fault, parse_power_cut
from device_sim.bench.platform import platform_for_bench, raise_file_limit
from device_sim.bench.probes import (
    Counters,
    LoopLag,
    cpu_snapshot,
    database_counts,
    hop_breakdown,
    voice_figures,
)
from device_sim.bench.report import BenchReport, Percentiles, SimHealth, WindowFigures
from device_sim.homes import SimDevice, SimHome
from device_sim.region.generate import generate_region
from device_sim.scenario.model import ALERT_CODE
from dispatcher.twilio_sandbox import SandboxMessage
from gateway.worker import STATUS_SETTLE_S

log = get_logger("device_sim.bench")


CONNECT_CONCURRENCY = 200


async def run_bench(  # noqa: C901 (over the complexity budget: known debt)
    settings: Settings, options: BenchOptions, *, console: Console | None = None
) -> BenchReport:
    console = console or Console()
    faults = [parse_fault(f) for f in options.faults]
    limit = raise_file_limit()
    if options.homes + 200 > limit:
        console.print(f"[yellow]open-file limit {limit} is below {options.homes} homes + margin[/]")
    presses = round(options.sos_rate * options.duration)
    if presses > options.homes:
        raise ValueError(
            f"{presses} presses need as many homes (each press is a new alert); have {options.homes}"
        )
    plan = generate_region(options.homes, options.seed)
    counters = Counters()
    notes: list[str] = []

    async with platform_for_bench(settings, options, plan) as target:
        by_elder: dict[str, list[SimDevice]] = {}
        for d in plan.devices:
            by_elder.setdefault(d.elder_code, []).append(
                SimDevice(d.device_id, d.kind.value, d.password, int(options.heartbeat_s))
            )
        homes = [
            SimHome(target.mqtt, by_elder[e.code], name=e.code, resend_after_s=5.0)
            for e in plan.elders
        ]

        def on_sms(message: SandboxMessage) -> None:
            if "回1" not in message.body and "Reply 1" not in message.body:
                return
            found = ALERT_CODE.search(message.body)
            if found is None:
                return
            code = found.group(0)
            counters.callout_at.setdefault(code, time.monotonic())
            counters.callout_wall.setdefault(code, time.time())
            counters.callouts[(message.to, code)] += 1

        unsubscribe = target.sandbox.subscribe(on_sms)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        heartbeats_sent = 0
        home_beats = 0
        reconnects = 0
        lag = LoopLag()
        try:
            with progress:
                connecting = progress.add_task("connect homes", total=len(homes), info="")
                semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

                async def connect(home: SimHome) -> bool:
                    async with semaphore:
                        try:
                            await home.connect(announce=False)
                            return True
                        except (OSError, TimeoutError) as exc:
                            log.warning("bench_connect_failed", home=home.name, error=repr(exc))
                            return False
                        finally:
                            progress.advance(connecting)

                connected = sum(await asyncio.gather(*(connect(h) for h in homes)))
                # Ten thousand homes are a few million long-lived objects (sockets, streams,
                # tasks): out of the cyclic collector's walks, which otherwise stalled this
                # process (and every timestamp it takes) for hundreds of milliseconds.
                gc.collect()
                gc.freeze()
                live = [h for h in homes if h.client.is_connected]
                if not live:
                    raise ConnectionError(f"no home could connect to the broker at {target.mqtt}")

                # Heartbeats: every home once per interval, spread evenly (a real fleet's phases).
                stop = asyncio.Event()

                async def beat_loop() -> None:
                    # Paced by the clock, not by counting ticks: a tick that comes late sends
                    # what fell due meanwhile, so the platform sees the nominal heartbeat load
                    # even when this process lags (the lag is measured and reported).
                    nonlocal heartbeats_sent, home_beats
                    rate = len(live) / options.heartbeat_s
                    order = list(live)
                    random.shuffle(order)
                    began = time.monotonic()
                    while not stop.is_set():
                        due = int((time.monotonic() - began) * rate)
                        while home_beats < due:
                            heartbeats_sent += order[home_beats % len(order)].heartbeat()
                            home_beats += 1
                        await asyncio.sleep(0.1)

                # The flooding home and the homes of the power cut press nothing themselves:
                # the figures are of everyone else's SOS.
                flood_home = live[-1] if options.flood_rate > 0 else None
                cut_township, cut_at = (
                    parse_power_cut(options.power_cut) if options.power_cut else ("", 0.0)
                )
                cut_elders = elders_of_township(plan, cut_township) if cut_township else set()
                cut_homes = [h for h in live if h.name in cut_elders]
                pressers = [h for h in live if h is not flood_home and h.name not in cut_elders]
                if presses + options.warmup > len(pressers):
                    raise ValueError(
                        f"{presses} presses and {options.warmup} warm-up presses need as many "
                        f"homes outside the flood and the power cut; have {len(pressers)}"
                    )
                picked = random.Random(options.seed).sample(pressers, presses + options.warmup)
                chosen, warming = picked[:presses], picked[presses:]
                if cut_homes and target.roles is not None and target.roles.started_at:
                    # A cut in steady state: in the gateways' first STATUS_SETTLE_S after they
                    # connect, a will waits out that window (a broker restart's wills), and the
                    # cut's work would fall after the load instead of in it.
                    wait = target.roles.started_at + STATUS_SETTLE_S + 1
                    if (early := wait - (time.monotonic() + cut_at)) > 0:
                        console.print(f"waiting {early:.0f} s: the gateways' settle window")
                        await asyncio.sleep(early)
                if warming:
                    warm = progress.add_task("warm-up", total=len(warming), info="")
                    for home in warming:
                        with contextlib.suppress(TimeoutError):
                            await home.send_event(
                                home.device("sos_button").device_id, "sos", give_up_after_s=30
                            )
                        progress.advance(warm)
                        await asyncio.sleep(1)
                loading = progress.add_task("load", total=options.duration, info="")
                press_tasks: list[asyncio.Task[None]] = []

                async def press(home: SimHome) -> None:
                    device = home.device("sos_button").device_id

                    def sent(event_id: str) -> None:
                        counters.first_send[event_id] = time.monotonic()
                        counters.first_send_wall[event_id] = time.time()
                        counters.sent_event_ids.append(event_id)

                    try:
                        ack = await home.send_event(
                            device,
                            "sos",
                            give_up_after_s=options.duration + options.drain_s,
                            on_first_send=sent,
                        )
                    except TimeoutError:
                        counters.failed += 1
                        return
                    counters.ack_at[ack.event_id] = counters.first_send[ack.event_id] + ack.seconds
                    counters.resends += ack.sends - 1
                    if ack.alert_id:
                        counters.alert_of[ack.event_id] = ack.alert_id

                beats = asyncio.create_task(beat_loop())
                lagging = asyncio.create_task(lag.run(stop))
                cpu_before = cpu_snapshot(target)
                load_before = os.getloadavg()[0]
                fault_tasks = [
                    asyncio.create_task(fault_at(target, role, at, console)) for role, at in faults
                ]
                flooder = (
                    Flood(flood_home, options.flood_rate, min(options.flood_s, options.duration))
                    if flood_home is not None
                    else None
                )
                if flooder is not None:
                    fault_tasks.append(asyncio.create_task(flooder.run()))
                if cut_homes:
                    fault_tasks.append(
                        asyncio.create_task(cut_power(cut_homes, cut_at, cut_township, console))
                    )
                started = time.monotonic()
                for n, home in enumerate(chosen):
                    due = started + n / options.sos_rate
                    if (wait := due - time.monotonic()) > 0:
                        await asyncio.sleep(wait)
                    press_tasks.append(asyncio.create_task(press(home)))
                    progress.update(
                        loading,
                        completed=min(options.duration, time.monotonic() - started),
                        info=f"{len(press_tasks)} SOS, {len(counters.ack_at)} acked",
                    )
                while (elapsed := time.monotonic() - started) < options.duration:
                    progress.update(
                        loading,
                        completed=elapsed,
                        info=f"{len(press_tasks)} SOS, {len(counters.ack_at)} acked",
                    )
                    await asyncio.sleep(0.5)
                load_seconds = time.monotonic() - started
                cpu_after = cpu_snapshot(target)
                load_after = os.getloadavg()[0]
                progress.update(loading, completed=options.duration)
                stop.set()
                await beats
                await lagging
                draining = progress.add_task("drain", total=len(press_tasks), info="")
                deadline = time.monotonic() + options.drain_s
                while time.monotonic() < deadline:
                    done = sum(t.done() for t in press_tasks)
                    answered = sum(
                        1 for code in counters.alert_of.values() if code in counters.callout_at
                    )
                    progress.update(draining, completed=done, info=f"{answered} call-outs")
                    if done == len(press_tasks) and answered >= len(counters.alert_of):
                        break
                    await asyncio.sleep(0.25)
                # A press still unacked now counts as unacked (its alert may still be there).
                for task in (*fault_tasks, *press_tasks):
                    task.cancel()
                await asyncio.gather(*fault_tasks, *press_tasks, return_exceptions=True)
                # The delivery receipts of the last SMS are still on their way (the sandbox
                # posts them 0.2 s after each SMS): let them reach the platform before it stops,
                # or they would count as receipts the platform could not take.
                settle = getattr(target.sandbox, "settle", None)
                if settle is not None:
                    await settle(max(5.0, deadline - time.monotonic()))
                reconnects = sum(max(0, h.client.connect_count - 1) for h in live)
        finally:
            unsubscribe()
            await asyncio.gather(
                *(h.close(say_offline=False) for h in homes), return_exceptions=True
            )

        alerts_in_db, sos_events = await database_counts(
            target.sessions, [h.device("sos_button").device_id for h in chosen], counters
        )
        hops, slowest = await hop_breakdown(target.sessions, counters, started)
        sms_requests = target.sandbox.requests_received
        voice = await voice_figures(target, [h.device("sos_button").device_id for h in chosen])
        flood = await flooder.figures(target.sessions) if flooder is not None else None
        power_cut = (
            await power_cut_figures(target.sessions, cut_homes, cut_township, cut_at)
            if cut_homes
            else None
        )

    ack_latency = [counters.ack_at[e] - counters.first_send[e] for e in counters.ack_at]
    # Every press that got its call-out: (seconds into the load it was sent, SOS → SMS request).
    called_out = [
        (
            counters.first_send[event_id] - started,
            counters.callout_at[code] - counters.first_send[event_id],
        )
        for event_id, code in counters.alert_of.items()
        if code in counters.callout_at
    ]
    windows: list[WindowFigures] = []
    window_s = 10.0
    slices = max(1, round(load_seconds / window_s))
    for n in range(slices):
        # The last slice takes the presses dispatched a moment after the nominal end too.
        lo = n * window_s
        hi = (n + 1) * window_s if n < slices - 1 else math.inf
        p = Percentiles.of([latency for at, latency in called_out if lo <= at < hi])
        end = min(hi, load_seconds)
        windows.append(
            WindowFigures(
                round(lo),
                round(end),
                p.count,
                p.p50_ms,
                p.p99_ms,
                lag.busy_between(started + lo, started + end),
            )
        )
    sms_samples = [(round(at, 3), round(latency, 4)) for at, latency in called_out]
    sms_latency = [latency for _, latency in called_out]
    sent = len(counters.sent_event_ids)
    lost = sent - alerts_in_db if alerts_in_db < sent else 0
    missing_sms = len(counters.alert_of) - len(sms_latency)
    if missing_sms:
        notes.append(f"{missing_sms} acked alerts had no call-out SMS by the end of the drain")
    if unacked := sent - len(counters.ack_at):
        notes.append(f"{unacked} presses were not acked by the end of the drain")
    webhooks_failed = getattr(target.sandbox, "webhooks_failed", 0)
    if webhooks_failed:
        notes.append(f"{webhooks_failed} delivery receipts could not be posted to the platform")
    messages = heartbeats_sent + sent + counters.resends
    return BenchReport(
        homes=options.homes,
        devices=len(plan.devices),
        connected_homes=connected,
        duration_s=round(load_seconds, 1),
        sos_rate=options.sos_rate,
        heartbeat_s=options.heartbeat_s,
        messages_sent=messages,
        messages_per_s=round(messages / load_seconds, 1),
        heartbeats_sent=heartbeats_sent,
        sos_sent=sent,
        sos_acked=len(counters.ack_at),
        sos_to_ack=Percentiles.of(ack_latency),
        sos_to_sms=Percentiles.of(sms_latency),
        alerts_in_db=alerts_in_db,
        sos_events_in_db=sos_events,
        lost=lost,
        duplicated_alerts=max(0, alerts_in_db - sent),
        duplicated_sms=sum(n - 1 for n in counters.callouts.values() if n > 1),
        resends=counters.resends,
        sms_requests=sms_requests,
        faults=options.faults,
        platform=target.label,
        notes=notes,
        flood=flood,
        power_cut=power_cut,
        hops=hops,
        voice=voice,
        slowest=slowest,
        windows=windows,
        sms_samples=sms_samples,
        sim=SimHealth(
            *lag.figures(),
            home_beats_due=round(len(live) * load_seconds / options.heartbeat_s),
            home_beats_sent=home_beats,
            reconnects=reconnects,
        ),
        cpu_s={
            name: round(cpu_after[name] - before, 1)
            for name, before in cpu_before.items()
            if name in cpu_after
        },
        load_average=[round(load_before, 2), round(load_after, 2)],
    )
