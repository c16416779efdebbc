"""Floods: does one flooding SOS button, or a township's power cut, slow P1 alerts elsewhere?

    .venv/bin/python bench/floods.py [--homes 300] [--sos-rate 5] [--duration 20]
                                     [--flood 1000] [--flood-seconds 5] [--cut T01@5]
                                     [--repeat 3] [--warmup 5] [--variant "power cut"]
                                     [--replicas gateway=2 …]
                                     [--json PATH]

Each round runs `anxin bench` three times on the same options — no disruption, a flood (one
home's SOS button sends `--flood` SOS a second, distinct event ids, for `--flood-seconds`), and
a power cut (every home of township `--cut` reports power_lost, then drops off the broker at
once) — with the roles as `anxin run` subprocesses, and prints the p50/p99 of the other homes'
SOS → device ack and SOS → SMS request (the Twilio-compatible endpoint receiving the nearest
aide's call-out), and the ratios disrupted / undisrupted: medians over `--repeat` rounds, the
p99 of all rounds' presses pooled, and the pooled p99 of the presses sent in the seconds the
disruption is felt in against the same seconds of the undisrupted rounds.
The flooding home and the homes of the cut press nothing themselves.

Needs ANXIN_DATABASE_URL (a scratch database is made and dropped there; default the machine's
postgresql://postgres@127.0.0.1:5432/postgres) and ANXIN_MQTT_URL (a broker of your own: the
bench connects one client per home), or --own-services to start both for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from anxin.logging import configure_logging
from anxin.settings import Settings
from device_sim.bench.load import run_bench
from device_sim.bench.options import BenchOptions, parse_replicas
from device_sim.bench.report import BenchReport, Percentiles, print_report

VARIANTS = ("none", "flood", "power cut")


def _options(args: argparse.Namespace, variant: str) -> BenchOptions:
    return BenchOptions(
        homes=args.homes,
        sos_rate=args.sos_rate,
        duration=args.duration,
        heartbeat_s=60,
        spawn_roles=True,
        replicas=parse_replicas(args.replicas or []),
        own_services=args.own_services,
        flood_rate=args.flood if variant == "flood" else 0.0,
        flood_s=args.flood_seconds,
        power_cut=args.cut if variant == "power cut" else None,
        drain_s=120,
        warmup=args.warmup,
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _pooled(reports: list[BenchReport], lo: float = 0.0, hi: float = math.inf) -> Percentiles:
    """SOS → SMS request over every round's presses sent in seconds [lo, hi) of the load: 300
    presses pin a p99 down better than the median of three rounds' p99s of 100 each."""
    return Percentiles.of(
        [latency for r in reports for at, latency in r.sms_samples if lo <= at < hi]
    )


def _disruption_windows(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """The seconds of the load each disruption is felt in: the flood while it is sent and 5 s
    after (its backlog), the power cut from the cut for 10 s (the wills, paced transitions)."""
    cut_at = float(args.cut.rpartition("@")[2] or 0)
    return {
        "flood": (0.0, args.flood_seconds + 5),
        "power cut": (cut_at, cut_at + 10),
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


async def main(args: argparse.Namespace) -> dict[str, Any]:
    console = Console()
    if not console.is_terminal:  # a log file: wide enough for the ratios table
        console = Console(width=150)
    settings = Settings(
        database_url=SecretStr(
            os.environ.get("ANXIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        ),
        mqtt_url=SecretStr(os.environ["ANXIN_MQTT_URL"])
        if "ANXIN_MQTT_URL" in os.environ
        else None,
    )
    variants = [v for v in VARIANTS if v == "none" or v in (args.variant or VARIANTS)]
    runs: dict[str, list[BenchReport]] = {v: [] for v in variants}
    for round_ in range(args.repeat):
        for variant in variants:
            console.rule(f"round {round_ + 1}/{args.repeat}: {variant}")
            report = await run_bench(settings, _options(args, variant), console=console)
            print_report(report, console)
            runs[variant].append(report)
    figures: dict[str, Any] = {}
    windows = _disruption_windows(args)
    table = Table(
        title=f"P1 SOS of other homes — {args.homes} homes, {args.sos_rate:g} SOS/s; "
        f"medians of {args.repeat} rounds, and all rounds' presses pooled"
    )
    for column in (
        "disruption",
        "ack p50 ms",
        "ack p99 ms",
        "SMS p50 ms",
        "SMS p99 ms",
        "SMS p99 ratio",
        "pooled: n, p99 ms (ratio)",
        "in its window: n, p99 ms (undisrupted)",
        "lost / doubled",
    ):
        table.add_column(column, justify="right")
    base_p99 = _median([r.sos_to_sms.p99_ms for r in runs["none"]])
    base_pooled = _pooled(runs["none"])
    for variant in variants:
        reports = runs[variant]
        pooled = _pooled(reports)
        row: dict[str, Any] = {
            "ack_p50_ms": _median([r.sos_to_ack.p50_ms for r in reports]),
            "ack_p99_ms": _median([r.sos_to_ack.p99_ms for r in reports]),
            "sms_p50_ms": _median([r.sos_to_sms.p50_ms for r in reports]),
            "sms_p99_ms": _median([r.sos_to_sms.p99_ms for r in reports]),
            "round_sms_p99_ms": [r.sos_to_sms.p99_ms for r in reports],
            "pooled_n": pooled.count,
            "pooled_sms_p99_ms": pooled.p99_ms,
            "pooled_sms_p99_ratio": _ratio(pooled.p99_ms, base_pooled.p99_ms),
            "lost": sum(r.lost for r in reports),
            "duplicated": sum(r.duplicated_alerts + r.duplicated_sms for r in reports),
            "flood_alerts": [r.flood.alerts for r in reports if r.flood],
            "flood_trigger_counts": [r.flood.trigger_count for r in reports if r.flood],
            "cut_homes": [r.power_cut.homes for r in reports if r.power_cut],
        }
        row["sms_p99_ratio"] = _ratio(row["sms_p99_ms"], base_p99)
        in_window = "—"
        if variant in windows:
            lo, hi = windows[variant]
            during, same_time = _pooled(reports, lo, hi), _pooled(runs["none"], lo, hi)
            row["window_s"] = [lo, hi]
            row["window_n"] = during.count
            row["window_sms_p99_ms"] = during.p99_ms
            row["window_undisrupted_sms_p99_ms"] = same_time.p99_ms
            row["window_sms_p99_ratio"] = _ratio(during.p99_ms, same_time.p99_ms)
            in_window = (
                f"s {lo:g}–{hi:g}: {during.count}, {during.p99_ms} ({same_time.p99_ms}; "
                f"{row['window_sms_p99_ratio']})"
            )
        figures[variant] = row
        table.add_row(
            variant,
            str(row["ack_p50_ms"]),
            str(row["ack_p99_ms"]),
            str(row["sms_p50_ms"]),
            str(row["sms_p99_ms"]),
            str(row["sms_p99_ratio"]),
            f"{pooled.count}, {pooled.p99_ms} ({row['pooled_sms_p99_ratio']})",
            in_window,
            f"{row['lost']} / {row['duplicated']}",
        )
    console.print(table)
    console.print(f"load average at the end: {os.getloadavg()}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--homes", type=int, default=300)
    parser.add_argument("--sos-rate", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--flood", type=float, default=1000.0)
    parser.add_argument("--flood-seconds", type=float, default=5.0)
    parser.add_argument("--cut", default="T01@5")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="SOS from other homes before each run's load, left out of the figures",
    )
    parser.add_argument(
        "--variant",
        action="append",
        choices=VARIANTS[1:],
        help="run only this disruption beside the undisrupted run (repeatable)",
    )
    parser.add_argument("--replicas", action="append")
    parser.add_argument("--own-services", action="store_true")
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    configure_logging("warning")
    result = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
