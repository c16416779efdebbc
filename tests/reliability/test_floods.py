"""Floods (issue 8): one SOS button sending 1,000 SOS a second is one alert whose trigger count
grows, and everyone else's SOS is still stored, acked and called out; a township's power cut
(every home there offline at once after `power_lost`) does not keep a P1 elsewhere from being
raised and called out. No timed asserts: the latency ratios are measured by
bench/floods.py."""

from __future__ import annotations

from pydantic import SecretStr
from rich.console import Console

from anxin.settings import Settings
from device_sim.bench.load import run_bench
from device_sim.bench.options import BenchOptions
from device_sim.bench.report import print_report


def _settings(database_url: str, mqtt_url: str) -> Settings:
    return Settings(
        database_url=SecretStr(database_url),  # the bench makes a scratch database there
        mqtt_url=SecretStr(mqtt_url),
        mqtt_shared_group="",
    )


async def test_one_button_flooding_sos_is_one_alert_and_others_are_still_served(
    database_url: str, mqtt_url: str
) -> None:
    console = Console(record=True, width=120)
    report = await run_bench(
        _settings(database_url, mqtt_url),
        BenchOptions(homes=60, sos_rate=2, duration=6, flood_rate=1000, flood_s=3, drain_s=90),
        console=console,
    )
    print_report(report, console)
    flood = report.flood
    assert flood is not None
    assert flood.sent >= 2000  # ~1,000 a second for 3 seconds
    # Every flood message that reached the platform joined ONE alert: its trigger count is
    # the number of distinct flood events stored.
    assert flood.alerts == 1
    assert flood.stored > 1
    assert flood.trigger_count == flood.stored
    # Everyone else: every press stored once, acked, one alert, one call-out.
    assert report.sos_sent == 12
    assert report.sos_acked == report.sos_sent
    assert report.alerts_in_db == report.sos_events_in_db == report.sos_sent
    assert report.lost == report.duplicated_alerts == report.duplicated_sms == 0
    assert report.sos_to_sms.count == report.sos_sent
    assert report.ok


async def test_township_power_cut_does_not_keep_p1_elsewhere_from_being_called_out(
    database_url: str, mqtt_url: str
) -> None:
    console = Console(record=True, width=120)
    report = await run_bench(
        _settings(database_url, mqtt_url),
        # 120 homes in 3 townships: T01's ~40 homes lose power one second into the load.
        BenchOptions(homes=120, sos_rate=2, duration=8, power_cut="T01@1", drain_s=90),
        console=console,
    )
    print_report(report, console)
    cut = report.power_cut
    assert cut is not None and cut.township == "T01" and cut.homes >= 30
    # The cut happened: every hub of the township reported it before going dark, and the
    # platform took every hub offline from its last will (the will is the hub's: a home's one
    # connection is its hub's, whatever order the home lists its devices in).
    assert cut.hubs > 0
    assert cut.power_lost_events == cut.hubs
    assert cut.offline_hubs == cut.hubs
    # The P1s elsewhere during the cut: all raised, acked and called out, none lost or doubled.
    assert report.sos_sent == 16
    assert report.sos_acked == report.sos_sent
    assert report.alerts_in_db == report.sos_events_in_db == report.sos_sent
    assert report.sos_to_sms.count == report.sos_sent
    assert report.lost == report.duplicated_alerts == report.duplicated_sms == 0
