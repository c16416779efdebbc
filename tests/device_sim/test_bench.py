"""`anxin bench` at small scale: its own counters agree with the database."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console

from anxin.settings import Settings
from device_sim.bench.load import run_bench
from device_sim.bench.options import BenchOptions, parse_fault
from device_sim.bench.report import Percentiles, print_report


async def test_bench_counts_every_sos_as_one_alert_with_one_call_out(
    database_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    # In the test's own event loop (the in-process broker outside CI lives there too).
    settings = Settings(
        database_url=SecretStr(database_url),  # the bench makes its own scratch database there
        mqtt_url=SecretStr(mqtt_url),
        mqtt_shared_group="",
    )
    console = Console(record=True, width=120)
    report = await run_bench(
        settings, BenchOptions(homes=50, sos_rate=2, duration=10, drain_s=60), console=console
    )
    print_report(report, console)
    out = tmp_path / "bench.json"
    out.write_text(report.to_json())
    figures = json.loads(out.read_text())
    assert figures["connected_homes"] == 50
    assert figures["sos_sent"] == 20
    # The database holds exactly what the bench says it sent: one alert per press, none missing.
    assert figures["alerts_in_db"] == figures["sos_events_in_db"] == 20
    assert figures["lost"] == 0
    assert figures["duplicated_alerts"] == figures["duplicated_sms"] == 0
    assert figures["sos_to_ack"]["count"] == figures["sos_to_sms"]["count"] == 20
    assert figures["ok"] is True
    assert "SOS → SMS request" in console.export_text()


def test_bench_percentiles_and_fault_syntax() -> None:
    figures = Percentiles.of([i / 1000 for i in range(1, 101)])  # 1 … 100 ms
    assert (figures.p50_ms, figures.p95_ms, figures.p99_ms, figures.max_ms) == (50, 95, 99, 100)
    assert Percentiles.of([]).p50_ms is None
    assert parse_fault("gateway@12.5") == ("gateway", 12.5)
    for bad in ("gateway", "mqtt@3", "@4"):
        try:
            parse_fault(bad)
        except ValueError as exc:
            assert "ROLE@SECONDS" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
