"""What the bench reads while and after it runs: the event loop's lag, CPU seconds per
process, where an SOS's time goes hop by hop (the timestamps the roles and Postgres store),
and the database's counts at the end."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, text
from sqlmodel import col

from alert_service.models import Alert
from anxin.db import SessionMaker
from device_sim.bench.platform import Target
from device_sim.bench.report import HopFigures, Percentiles, SlowPress, VoiceFigures
from device_sim.harness import OwnPostgres
from dispatcher.models import SmsMessage, VoiceCall
from gateway.models import Event


def _machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


class LoopLag:
    """This process's event-loop lateness: how much later than asked a short sleep returns;
    and, once a second, the machine's CPU counters (for the per-window table)."""

    PERIOD_S = 0.05

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.machine: list[tuple[float, int, int]] = []  # (monotonic, busy, total jiffies)

    async def run(self, stop: asyncio.Event) -> None:
        next_machine = 0.0
        while not stop.is_set():
            began = time.monotonic()
            if began >= next_machine and (jiffies := _machine_jiffies()) is not None:
                self.machine.append((began, *jiffies))
                next_machine = began + 1.0
            await asyncio.sleep(self.PERIOD_S)
            self.samples.append(max(0.0, time.monotonic() - began - self.PERIOD_S))

    def busy_between(self, start: float, end: float) -> float | None:
        inside = [m for m in self.machine if start - 0.5 <= m[0] <= end + 0.5]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            return None
        return round((inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2]), 2)

    def figures(self) -> tuple[float | None, float | None, float | None]:
        p = Percentiles.of(self.samples)
        return p.p50_ms, p.p99_ms, p.max_ms


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids(postgres: OwnPostgres) -> list[int]:
    """The bench's own Postgres: its postmaster and every backend (its children)."""
    try:
        postmaster = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


def cpu_snapshot(target: Target) -> dict[str, float]:
    """CPU seconds so far of each process the bench can see: itself (homes, sandbox and, by
    default, the roles), the role processes, its own Mosquitto and Postgres (backends that
    ended since are not counted)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = {"bench": usage.ru_utime + usage.ru_stime}
    if target.roles is not None:
        for name, proc in target.roles.procs.items():
            if (cpu := process_cpu_s(proc.pid)) is not None:
                seconds[name] = cpu
    broker = target.mosquitto.process if target.mosquitto is not None else None
    if broker is not None and (cpu := process_cpu_s(broker.pid)) is not None:
        seconds["mosquitto"] = cpu
    if target.postgres is not None:
        seconds["postgres"] = sum(
            cpu for pid in _postgres_pids(target.postgres) if (cpu := process_cpu_s(pid))
        )
    return seconds


@dataclass
class Counters:
    first_send: dict[str, float] = field(default_factory=dict)  # event_id → monotonic
    ack_at: dict[str, float] = field(default_factory=dict)
    alert_of: dict[str, str] = field(default_factory=dict)  # event_id → alert code
    callout_at: dict[str, float] = field(default_factory=dict)  # alert code → first call-out
    callouts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phone, code)
    sent_event_ids: list[str] = field(default_factory=list)
    # Wall-clock twins (time.time()) of first_send and callout_at, to set beside the
    # timestamps the roles and Postgres store (same machine, same clock).
    first_send_wall: dict[str, float] = field(default_factory=dict)
    callout_wall: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    resends: int = 0


HOPS_WITH_COMMITS = (
    ("device publish → gateway batch", "publish", "gw_batch"),
    ("gateway batch → gateway commit", "gw_batch", "gw_commit"),
    ("gateway commit → device ack received", "gw_commit", "ack"),
    ("gateway commit → watcher claims", "gw_commit", "watcher"),
    ("watcher claims → watcher commit (outbox row)", "watcher", "watcher_commit"),
    ("watcher commit → SMS POST received", "watcher_commit", "post"),
    ("device publish → SMS POST received", "publish", "post"),
)
HOPS_WITHOUT_COMMITS = (
    ("device publish → gateway batch", "publish", "gw_batch"),
    ("gateway batch → device ack received", "gw_batch", "ack"),
    ("gateway batch → watcher claims", "gw_batch", "watcher"),
    ("watcher claims → SMS POST received", "watcher", "post"),
    ("device publish → SMS POST received", "publish", "post"),
)


SLOWEST_SHOWN = 5


async def hop_breakdown(
    sessions: SessionMaker, counters: Counters, started: float
) -> tuple[list[HopFigures], list[SlowPress]]:
    """Per hop, p50/p99/max over every press that reached its call-out SMS, and the slowest
    presses hop by hop (a tail traced to its hop and its moment: a fault, a power cut).

    From the bench (wall clock): the device's first publish, the device ack, the SMS POST
    received. From the rows: the gateway batch's clock (`events.received_at`), the watcher
    tick's clock (`alerts.ranked_at`). With `track_commit_timestamp` on (the bench turns it on
    in its own Postgres, `--own-services`), the commits too: the gateway's (the event row), the
    watcher's (the alert's first `asked` timeline row, never updated). The dispatcher's commit
    is not on a row (the SMS row is updated again by the delivery receipts)."""
    sample = {
        event_id: int(code[1:])
        for event_id, code in counters.alert_of.items()
        if code in counters.callout_wall and event_id in counters.first_send_wall
    }
    if not sample:
        return [], []
    async with sessions() as session:
        commits = (
            await session.scalar(text("SELECT current_setting('track_commit_timestamp')"))
        ) == "on"

        def ts(column: str) -> str:
            if not commits:
                return "NULL::timestamptz"
            return f"pg_xact_commit_timestamp({column})"

        rows = (
            await session.execute(
                text(
                    f"""
                    SELECT e.event_id, e.received_at, a.ranked_at,
                           {ts("e.xmin")}, {ts("t.xmin")}
                    FROM events e
                    JOIN alerts a ON a.id = e.alert_id
                    LEFT JOIN LATERAL (
                        SELECT xmin FROM alert_timeline
                        WHERE alert_id = a.id AND action = 'asked' ORDER BY id LIMIT 1
                    ) t ON true
                    WHERE e.event_id = ANY(:event_ids) AND e.type = 'sos'
                    """
                ),
                {"event_ids": list(sample)},
            )
        ).all()
    hops = HOPS_WITH_COMMITS if commits else HOPS_WITHOUT_COMMITS
    spans: dict[str, list[float]] = {name: [] for name, _, _ in hops}
    presses: list[SlowPress] = []
    for event_id, received, ranked, gw_commit, watcher_commit in rows:
        code = f"A{sample[event_id]}"
        publish = counters.first_send_wall[event_id]
        ack = counters.ack_at.get(event_id)
        at: dict[str, float | None] = {
            "publish": publish,
            "gw_batch": received.timestamp() if received else None,
            "gw_commit": gw_commit.timestamp() if gw_commit else None,
            "ack": publish + (ack - counters.first_send[event_id]) if ack else None,
            "watcher": ranked.timestamp() if ranked else None,
            "watcher_commit": watcher_commit.timestamp() if watcher_commit else None,
            "post": counters.callout_wall[code],
        }
        press: dict[str, float] = {}
        for name, start, end in hops:
            a, b = at[start], at[end]
            if a is not None and b is not None:
                spans[name].append(b - a)
                press[name] = round((b - a) * 1000, 1)
        presses.append(
            SlowPress(
                round(counters.first_send[event_id] - started, 1),
                round((counters.callout_wall[code] - publish) * 1000, 1),
                press,
            )
        )
    figures = []
    for name, _, _ in hops:
        p = Percentiles.of(spans[name])
        figures.append(HopFigures(name, p.p50_ms, p.p99_ms, p.max_ms, p.count))
    presses.sort(key=lambda p: p.total_ms, reverse=True)
    return figures, presses[:SLOWEST_SHOWN]


async def database_counts(
    sessions: SessionMaker, sos_devices: list[str], counters: Counters
) -> tuple[int, int]:
    """Every SOS sent must be one event and one alert in the database."""
    async with sessions() as session:
        events = int(
            await session.scalar(
                select(func.count())
                .select_from(Event)
                .where(col(Event.event_id).in_(counters.sent_event_ids), col(Event.type) == "sos")
            )
            or 0
        )
        alerts = int(
            await session.scalar(
                select(func.count())
                .select_from(Alert)
                .where(col(Alert.kind) == "sos", col(Alert.device_id).in_(sos_devices))
            )
            or 0
        )
    return alerts, events


async def voice_figures(target: Target, sos_devices: list[str]) -> VoiceFigures:
    """Calls of the SOS alerts of this run (issue 19): first call placed after the SOS was
    received, calls and SMS per alert, and whether the endpoint took any call twice."""
    async with target.sessions() as session:
        alerts = select(col(Alert.id)).where(
            col(Alert.kind) == "sos", col(Alert.device_id).in_(sos_devices)
        )
        n_alerts = int(
            await session.scalar(select(func.count()).select_from(alerts.subquery())) or 0
        )
        first = await session.execute(
            select(col(Alert.raised_at), func.min(VoiceCall.placed_at))
            .join(VoiceCall, col(VoiceCall.alert_id) == col(Alert.id))
            .where(col(Alert.id).in_(alerts), col(VoiceCall.placed_at).is_not(None))
            .group_by(col(Alert.id), col(Alert.raised_at))
        )
        latencies = [(placed - raised).total_seconds() for raised, placed in first if placed]
        calls = int(
            await session.scalar(
                select(func.count())
                .select_from(VoiceCall)
                .where(col(VoiceCall.alert_id).in_(alerts))
            )
            or 0
        )
        placed_sids = set(
            (
                await session.execute(
                    select(col(VoiceCall.provider_sid)).where(
                        col(VoiceCall.provider_sid).is_not(None)
                    )
                )
            ).scalars()
        )
        sms = int(
            await session.scalar(
                select(func.count())
                .select_from(SmsMessage)
                .where(col(SmsMessage.alert_id).in_(alerts), col(SmsMessage.direction) == "out")
            )
            or 0
        )
    sandbox_calls = getattr(target.sandbox, "calls", [])
    # One ladder step is one row with one provider id: a call at the endpoint that no row
    # names was placed a second time for a step (or is still in flight at the end).
    duplicated = sum(1 for c in sandbox_calls if c.sid not in placed_sids)
    return VoiceFigures(
        sos_to_call=Percentiles.of(latencies),
        alerts_called=len(latencies),
        calls=calls,
        calls_per_alert=round(calls / n_alerts, 2) if n_alerts else 0.0,
        sms_per_alert=round(sms / n_alerts, 2) if n_alerts else 0.0,
        call_requests=int(getattr(target.sandbox, "call_requests_received", 0)),
        calls_at_endpoint=len(sandbox_calls),
        duplicated_calls=duplicated,
    )
