"""`anxin sim run FILE` and `anxin bench`: the simulator's commands.

Wired into anxin/cli.py as `app.add_typer(sim_app, name="sim")` and
`app.command("bench")(bench_command)`; until then `python -m device_sim.cli sim run FILE` and
`python -m device_sim.cli bench …` run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from anxin.logging import configure_logging
from anxin.settings import Settings

sim_app = typer.Typer(help="Simulated homes and aides: play scenario files.", no_args_is_help=True)
console = Console()


def _settings() -> Settings:
    settings = Settings()
    # The simulator's own output is the report; the platform's info logs would drown it.
    configure_logging("warning" if settings.log_level == "info" else settings.log_level)
    return settings


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    async def main() -> Any:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, task.cancel)
        return await task

    return asyncio.run(main())


async def _server_url(settings: Settings) -> str:
    """The Postgres server to make a scratch database on: the configured one, or embedded."""
    from anxin.db import resolve_database_url

    return (await resolve_database_url(settings)).replace("postgresql+asyncpg://", "postgresql://")


async def _play_files(
    settings: Settings, files: list[Path], *, real_time: bool, external: bool
) -> bool:
    from anxin.broker import EmbeddedBroker, embedded_broker
    from device_sim.harness import engine_for, scratch_database
    from device_sim.region import generate_region
    from device_sim.scenarios import (
        ScenarioPlayer,
        load_scenario,
        play_in_process,
        render,
        seed_plan,
    )

    scenarios = [load_scenario(f) for f in files]  # every file checked before anything runs
    all_passed = True
    if external:
        if settings.database_url is None or settings.mqtt_url is None:
            raise typer.BadParameter("--external needs ANXIN_DATABASE_URL and ANXIN_MQTT_URL")
        if not settings.twilio_configured:
            raise typer.BadParameter(
                "--external plays the SMS side: set the platform's ANXIN_TWILIO_* (the base URL "
                "is where this command serves its Twilio-compatible endpoint)"
            )
        from anxin.mqtt import BrokerAddress
        from device_sim.harness import external_sms_side

        async with external_sms_side(settings) as (sandbox, sessions):
            for scenario in scenarios:
                plan = generate_region(scenario.region.homes, scenario.region.seed)
                await seed_plan(sessions, plan)
                player = ScenarioPlayer(
                    scenario,
                    plan,
                    sessions=sessions,
                    sandbox=sandbox,
                    mqtt=BrokerAddress.parse(settings.mqtt_url.get_secret_value()),
                    clock=None,
                )
                result = await player.play()
                render(result, console)
                all_passed &= result.passed
        return all_passed

    broker: EmbeddedBroker | None = None
    if settings.mqtt_url is not None:
        mqtt_url = settings.mqtt_url.get_secret_value()
    else:
        broker = embedded_broker(persistence=False)
        await broker.start()
        mqtt_url = broker.url
    try:
        server = await _server_url(settings)
        for scenario in scenarios:
            # A fresh database per scenario: its counts are of its own alerts only.
            async with scratch_database(server) as url, engine_for(url) as engine:
                result = await play_in_process(
                    scenario,
                    database_url=url,
                    mqtt_url=mqtt_url,
                    engine=engine,
                    real_time=real_time,
                )
            render(result, console)
            all_passed &= result.passed
    finally:
        if broker is not None:
            await broker.stop()
    return all_passed


@sim_app.command("run")
def run_scenarios(
    files: Annotated[
        list[Path], typer.Argument(help="Scenario YAML files (see device_sim/scenarios/).")
    ],
    real_time: Annotated[
        bool, typer.Option("--real-time", help="Wait for real instead of moving a fake clock.")
    ] = False,
    external: Annotated[
        bool,
        typer.Option(
            "--external",
            help="Against a platform already running (real time): ANXIN_DATABASE_URL and "
            "ANXIN_MQTT_URL as the platform's; this command serves the platform's "
            "ANXIN_TWILIO_BASE_URL as the aides' phones.",
        ),
    ] = False,
) -> None:
    """Play scenario files and report pass/fail per expectation (exit code 1 on a failure).

    By default every role runs in this process against a scratch database on the configured
    (or embedded) Postgres, on scenario time: a FakeClock moved straight to the next thing
    that can happen, so a 40-minute night plays in seconds.
    """
    from device_sim.scenarios import ScenarioError

    settings = _settings()
    try:
        passed = _run(
            _play_files(settings, files, real_time=real_time or external, external=external)
        )
    except ScenarioError as exc:
        console.print(f"[bold red]bad scenario file[/]\n{exc}")
        raise typer.Exit(2) from exc
    raise typer.Exit(0 if passed else 1)


@sim_app.command("list")
def list_scenarios() -> None:
    """The scenarios that come with Anxin."""
    from device_sim.scenarios import bundled_scenarios, load_scenario

    for path in bundled_scenarios():
        console.print(f"[bold]{path}[/]\n  {load_scenario(path).name}")


def bench_command(
    homes: Annotated[
        int | None,
        typer.Option(help="Homes to connect, one MQTT connection each (1000; 500 in the suite)."),
    ] = None,
    sos_rate: Annotated[
        float, typer.Option(help="SOS presses per second, across all homes.")
    ] = 5.0,
    duration: Annotated[float, typer.Option(help="Seconds of load after every home is up.")] = 60.0,
    heartbeat: Annotated[float, typer.Option(help="Seconds between a home's heartbeats.")] = 60.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="ROLE@SECONDS: kill every replica of that role (gateway, alerts, dispatcher, "
            "web) with SIGKILL at that second and start it again; ROLE#N@SECONDS: replica N "
            "only; mosquitto@SECONDS / postgres@SECONDS: restart the bench's own broker or "
            "database (started for the run). The roles then run as `anxin run` subprocesses."
        ),
    ] = None,
    replicas: Annotated[
        list[str] | None,
        typer.Option(
            help="ROLE=N: run N processes of that role (e.g. --replicas gateway=2 "
            "--replicas alerts=2); the roles then run as `anxin run` subprocesses."
        ),
    ] = None,
    own_services: Annotated[
        bool,
        typer.Option(
            "--own-services",
            help="Start a Postgres and a Mosquitto of the bench's own (in a temporary "
            "directory) instead of the configured ones.",
        ),
    ] = False,
    external: Annotated[
        bool,
        typer.Option(
            "--external",
            help="Load a platform already running (ANXIN_DATABASE_URL, ANXIN_MQTT_URL, and its "
            "ANXIN_TWILIO_BASE_URL served here); its region must be the bench's.",
        ),
    ] = False,
    spawn_roles: Annotated[
        bool,
        typer.Option(
            "--spawn-roles",
            help="Run the roles as `anxin run` subprocesses (one per role) even without a fault, "
            "so the platform does not share this process's CPU with the homes.",
        ),
    ] = False,
    fault_suite: Annotated[
        bool,
        typer.Option(
            "--fault-suite",
            help="The fault suite: gateway×2, alerts×2, dispatcher×2 and web as processes on a "
            "Postgres and Mosquitto of its own; per scenario (baseline, each role SIGKILLed, "
            "Mosquitto restarted, Postgres restarted) a burst of --presses SOS from --homes "
            "homes; prints one table of alerts expected/found, duplicates, missing, max delay.",
        ),
    ] = False,
    presses: Annotated[int, typer.Option(help="--fault-suite: SOS presses per scenario.")] = 2000,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="--fault-suite: run only these scenarios (baseline, gateway, alerts, "
            "dispatcher, web, mosquitto, postgres; ROLE#N kills replica N only)."
        ),
    ] = None,
    flood: Annotated[
        float,
        typer.Option(
            help="Flood: one home's SOS button sends this many SOS per second (distinct event "
            "ids) through the load; its presses are left out of the latency figures."
        ),
    ] = 0.0,
    power_cut: Annotated[
        str | None,
        typer.Option(
            help="TOWNSHIP@SECONDS: every home of that township (e.g. T01) reports power_lost "
            "and drops off the broker at that second; its homes do not press SOS."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Region seed.")] = 2026,
) -> None:
    """Load: N homes heartbeating plus an SOS rate; latency, throughput, lost and duplicates."""
    if fault_suite:
        _fault_suite(homes or 500, presses, list(scenario or []), json_out)
        return
    from device_sim.bench import BenchOptions, parse_fault, parse_replicas, print_report, run_bench

    try:
        for spec in fault or []:
            parse_fault(spec)
        replica_counts = parse_replicas(list(replicas or []))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = _settings()
    options = BenchOptions(
        homes=homes or 1000,
        sos_rate=sos_rate,
        duration=duration,
        heartbeat_s=heartbeat,
        faults=list(fault or []),
        external=external,
        seed=seed,
        spawn_roles=spawn_roles,
        replicas=replica_counts,
        own_services=own_services,
        flood_rate=flood,
        power_cut=power_cut,
    )
    report = _run(run_bench(settings, options, console=console))
    print_report(report, console)
    if json_out is not None:
        json_out.write_text(report.to_json(), encoding="utf-8")
        console.print(f"figures written to {json_out}")
    raise typer.Exit(0 if report.ok else 1)


def _fault_suite(homes: int, presses: int, scenarios: list[str], json_out: Path | None) -> None:
    from device_sim.faults import (
        SCENARIOS,
        ScenarioResult,
        SuiteOptions,
        print_suite,
        run_fault_suite,
        valid_scenario,
    )

    unknown = [s for s in scenarios if not valid_scenario(s)]
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; choose from {SCENARIOS}")
    _settings()
    options = SuiteOptions(
        homes=homes, presses=presses, scenarios=tuple(scenarios) if scenarios else SCENARIOS
    )

    def done(s: ScenarioResult) -> None:
        console.print(
            f"[bold]{s.scenario}[/]: sent {s.messages_sent} (+{s.resends} resent), alerts "
            f"{s.alerts_found}/{s.alerts_expected}, duplicates {s.duplicates}, missing "
            f"{s.missing}, max delay {s.max_delay_s} s, steps {s.steps_seen}/"
            f"{s.steps_expected}, {s.wall_s:g} s {s.detail or ''}"
        )

    report = _run(run_fault_suite(options, console=console, on_result=done))
    print_suite(report, console)
    if json_out is not None:
        json_out.write_text(report.to_json(), encoding="utf-8")
        console.print(f"figures written to {json_out}")
    raise typer.Exit(0 if report.ok else 1)


app = typer.Typer(help="Anxin device simulator.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
app.command("bench")(bench_command)

if __name__ == "__main__":
    app()
