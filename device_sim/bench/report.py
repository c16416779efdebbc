"""What `anxin bench` found: the figures of a run (JSON-ready dataclasses) and their table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table


@dataclass
class Percentiles:
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        if not seconds:
            return cls(0, None, None, None, None)
        ordered = sorted(seconds)

        def at(q: float) -> float:
            # nearest rank: the smallest value with at least q of the samples at or below it
            index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
            return round(ordered[index] * 1000, 1)

        return cls(len(ordered), at(0.50), at(0.95), at(0.99), round(ordered[-1] * 1000, 1))


@dataclass
class HopFigures:
    """One hop of an SOS's way to the aide's SMS, over the presses that made it through."""

    hop: str
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    count: int


@dataclass
class SlowPress:
    """One of the slowest presses, hop by hop: where its time went, and when in the load."""

    at_s: float  # first publish, seconds into the load
    total_ms: float  # device publish → SMS POST received
    hops_ms: dict[str, float]  # hop (as in the hop table) → ms


@dataclass
class WindowFigures:
    """SOS → SMS request of the presses first sent in one slice of the load, beside how busy
    the whole machine was then (every process, not only the bench's): on a shared machine the
    tail follows the CPU left over."""

    from_s: float
    to_s: float
    presses: int
    p50_ms: float | None
    p99_ms: float | None
    machine_busy: float | None  # share of all cores busy (/proc/stat), 0–1


@dataclass
class SimHealth:
    """Whether the simulator itself kept up: its event loop's lateness (a 50 ms sleep measured
    against the clock) and the heartbeats it sent against those due. A late loop delays every
    timestamp the bench takes (publish, ack, SMS received) and every heartbeat."""

    loop_lag_p50_ms: float | None
    loop_lag_p99_ms: float | None
    loop_lag_max_ms: float | None
    home_beats_due: int  # one per home and heartbeat interval over the load
    home_beats_sent: int
    reconnects: int  # connections the homes had to open again (a keepalive missed, a drop)


@dataclass
class FloodFigures:
    """One SOS button sending far more than any elder could press (a stuck or broken button,
    or someone replaying its messages): the platform must make one alert of it, not thousands,
    and must not slow anyone else's."""

    device_id: str
    rate_per_s: float
    seconds: float
    sent: int
    stored: int  # distinct events of the flood in the database
    alerts: int  # alerts of the flooding device (must be 1)
    trigger_count: int  # of that alert: the presses it took in


@dataclass
class PowerCutFigures:
    """A township's mains power gone: every home there reports `power_lost` from the hub's
    battery and drops off the broker at once (last wills)."""

    township: str
    at_s: float
    homes: int
    hubs: int  # homes with a hub (the device that reports mains power)
    power_lost_events: int  # stored in the database
    offline_hubs: int  # hubs the platform marked offline (from their last wills)


@dataclass
class VoiceFigures:
    """Voice call-outs under the load (issue 19): SOS received → first call placed (the
    provider took it), and what an alert cost in calls and SMS."""

    sos_to_call: Percentiles
    alerts_called: int
    calls: int
    calls_per_alert: float
    sms_per_alert: float
    call_requests: int  # POSTs to Calls.json at the endpoint
    calls_at_endpoint: int
    duplicated_calls: int  # calls the endpoint took twice for one ladder step


@dataclass
class BenchReport:
    homes: int
    devices: int
    connected_homes: int
    duration_s: float
    sos_rate: float
    heartbeat_s: float
    messages_sent: int
    messages_per_s: float
    heartbeats_sent: int
    sos_sent: int
    sos_acked: int
    sos_to_ack: Percentiles
    sos_to_sms: Percentiles
    alerts_in_db: int
    sos_events_in_db: int
    lost: int
    duplicated_alerts: int
    duplicated_sms: int
    resends: int
    sms_requests: int
    faults: list[str]
    platform: str
    notes: list[str] = field(default_factory=list)
    flood: FloodFigures | None = None
    power_cut: PowerCutFigures | None = None
    # Where an SOS's time goes, hop by hop (see `hop_breakdown`), and the simulator's health.
    hops: list[HopFigures] = field(default_factory=list)
    slowest: list[SlowPress] = field(default_factory=list)
    windows: list[WindowFigures] = field(default_factory=list)
    sim: SimHealth | None = None
    # Every press that got its call-out: (second of the load it was sent in, SOS → SMS request
    # in seconds), so that runs can be pooled or cut to a window (bench/floods.py).
    sms_samples: list[tuple[float, float]] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process → CPU seconds under load
    load_average: list[float] = field(default_factory=list)  # 1-min load at start and end
    voice: VoiceFigures | None = None

    @property
    def ok(self) -> bool:
        one_flood_alert = self.flood is None or self.flood.alerts == 1
        return (
            self.lost == 0
            and self.duplicated_alerts == 0
            and self.duplicated_sms == 0
            and (self.voice is None or self.voice.duplicated_calls == 0)
            and one_flood_alert
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"ok": self.ok}, indent=2, ensure_ascii=False)


def _voice_rows(v: VoiceFigures | None) -> list[tuple[str, Any]]:
    if v is None:
        return []
    c = v.sos_to_call
    return [
        (
            "SOS → first call placed p50 / p95 / p99 / max ms",
            f"{c.p50_ms} / {c.p95_ms} / {c.p99_ms} / {c.max_ms} (n={c.count})",
        ),
        (
            "calls / SMS per alert",
            f"{v.calls_per_alert:g} / {v.sms_per_alert:g} ({v.calls} calls, {v.alerts_called} alerts called)",
        ),
        (
            "call requests / calls at the endpoint / duplicated",
            f"{v.call_requests} / {v.calls_at_endpoint} / {v.duplicated_calls}",
        ),
    ]


def print_report(report: BenchReport, console: Console) -> None:
    table = Table(
        title=f"anxin bench — {report.homes} homes, {report.sos_rate:g} SOS/s, {report.duration_s:g} s ({report.platform})"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows: list[tuple[str, Any]] = [
        ("connected homes", f"{report.connected_homes}/{report.homes} ({report.devices} devices)"),
        ("messages sent / s", f"{report.messages_per_s:g} ({report.messages_sent} total)"),
        ("SOS sent / acked", f"{report.sos_sent} / {report.sos_acked} (resends {report.resends})"),
    ]
    for name, p in (
        ("SOS → device ack", report.sos_to_ack),
        ("SOS → SMS request", report.sos_to_sms),
    ):
        rows.append(
            (
                f"{name} p50 / p95 / p99 / max ms",
                f"{p.p50_ms} / {p.p95_ms} / {p.p99_ms} / {p.max_ms} (n={p.count})",
            )
        )
    rows += [
        ("alerts in database / SOS events", f"{report.alerts_in_db} / {report.sos_events_in_db}"),
        ("lost", report.lost),
        (
            "duplicated alerts / call-out SMS",
            f"{report.duplicated_alerts} / {report.duplicated_sms}",
        ),
        ("SMS requests at the endpoint", report.sms_requests),
    ]
    rows += _voice_rows(report.voice)
    rows += [("faults", ", ".join(report.faults) or "none")]
    if (f := report.flood) is not None:
        rows += [
            (
                "flood: SOS sent / stored",
                f"{f.sent} / {f.stored} ({f.rate_per_s:g}/s for {f.seconds:g} s, {f.device_id})",
            ),
            ("flood: alerts / trigger count", f"{f.alerts} / {f.trigger_count}"),
        ]
    if (c := report.power_cut) is not None:
        rows += [
            ("power cut: township / homes", f"{c.township} at {c.at_s:g} s / {c.homes}"),
            (
                "power cut: hubs / power_lost stored / hubs offline",
                f"{c.hubs} / {c.power_lost_events} / {c.offline_hubs}",
            ),
        ]
    if (h := report.sim) is not None:
        rows += [
            (
                "simulator loop lag p50 / p99 / max ms",
                f"{h.loop_lag_p50_ms} / {h.loop_lag_p99_ms} / {h.loop_lag_max_ms}",
            ),
            (
                "simulator heartbeats sent / due (homes), reconnects",
                f"{h.home_beats_sent} / {h.home_beats_due}, {h.reconnects}",
            ),
        ]
    if report.load_average:
        rows.append(
            (
                "load average (1 min) at start / end of load",
                " / ".join(map(str, report.load_average)),
            )
        )
    if report.cpu_s:
        rows.append(
            (
                f"CPU s over the {report.duration_s:g} s load",
                ", ".join(f"{k} {v:g}" for k, v in report.cpu_s.items()),
            )
        )
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    if report.hops:
        hops = Table(title="SOS → SMS request, hop by hop (presses that got their call-out)")
        hops.add_column("hop")
        for column in ("p50 ms", "p99 ms", "max ms", "n"):
            hops.add_column(column, justify="right")
        for n, hop in enumerate(report.hops, 1):
            hops.add_row(
                f"{n}. {hop.hop}", str(hop.p50_ms), str(hop.p99_ms), str(hop.max_ms), str(hop.count)
            )
        console.print(hops)
    if report.slowest:
        names = [hop.hop for hop in report.hops if hop.hop in report.slowest[0].hops_ms]
        slow = Table(title="the slowest presses, hop by hop (ms; hops numbered as above)")
        slow.add_column("at s", justify="right")
        slow.add_column("total", justify="right")
        for n, _ in enumerate(names, 1):
            slow.add_column(f"hop {n}", justify="right")
        for press in report.slowest:
            cells = [str(press.hops_ms.get(name, "—")) for name in names]
            slow.add_row(f"{press.at_s:g}", str(press.total_ms), *cells)
        console.print(slow)
    if report.windows:
        slices = Table(title="SOS → SMS request by 10 s of load, beside the machine's CPU")
        for column in ("seconds", "presses", "p50 ms", "p99 ms", "machine busy"):
            slices.add_column(column, justify="right")
        for w in report.windows:
            busy = f"{w.machine_busy:.0%}" if w.machine_busy is not None else "—"
            slices.add_row(
                f"{w.from_s:g}–{w.to_s:g}", str(w.presses), str(w.p50_ms), str(w.p99_ms), busy
            )
        console.print(slices)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print("[green]OK[/]" if report.ok else "[bold red]LOST OR DUPLICATED[/]")
