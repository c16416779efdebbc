"""`anxin sim run FILE` and `anxin bench`: the simulator's commands.

Wired into anxin/cli.py as `app.add_typer(sim_app, name="sim")` and
`app.command("bench")(bench_command)`; until then `python -m device_sim.cli sim run FILE` and
`python -m device_sim.cli bench …` run them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from anxin.cli_run import INTERRUPTED_EXIT, Interrupted, run_until_interrupted
from anxin.logging import configure_logging, get_logger
from anxin.settings import Settings

if TYPE_CHECKING:
    from device_sim.scenario.checks import ScenarioResult as Played  # faults has one too
    from device_sim.scenario.model import Scenario

log = get_logger("device_sim.cli")

sim_app = typer.Typer(help="Simulated homes and aides: play scenario files.", no_args_is_help=True)
console = Console()


def _settings() -> Settings:
    settings = Settings()
    # The simulator's own output is the report; the platform's info logs would drown it.
    configure_logging("warning" if settings.log_level == "info" else settings.log_level)
    return settings


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a command; Ctrl-C stops it cleanly, with no traceback, and exits 130."""
    try:
        return run_until_interrupted(coro)
    except Interrupted:
        console.print("interrupted")
        raise typer.Exit(INTERRUPTED_EXIT) from None


Progress_ = Callable[[float], None]


@dataclass
class Tally:
    """How many scenarios passed and failed so far, for the closing line (also when stopped)."""

    total: int
    passed: int = 0
    failed: int = 0

    def line(self, seconds: float) -> str:
        not_run = self.total - self.passed - self.failed
        return (
            f"{self.passed} passed, {self.failed} failed"
            + (f", {not_run} not run" if not_run else "")
            + f" ({seconds:.0f} s)"
        )


@contextlib.contextmanager
def _progress_bar(tally: Tally) -> Iterator[Callable[[Scenario], Progress_ | None]]:
    """A bar per scenario in scenario time, on stderr and only on a terminal (a log or a pipe
    gets the report alone). Yields: scenario → the player's progress callback."""
    err = Console(stderr=True)
    if not err.is_terminal:
        yield lambda _: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[played]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        current: list[Any] = []

        def start(scenario: Scenario) -> Progress_:
            for task in current:
                progress.remove_task(task)
            done = tally.passed + tally.failed
            total = float(scenario.run_for)
            task = progress.add_task(
                f"[{done + 1}/{tally.total}] {scenario.name[:40]}", total=total, played="starting"
            )
            current[:] = [task]

            def advance(played: float) -> None:
                progress.update(
                    task, completed=played, played=f"{_clock(played)} / {_clock(total)}"
                )

            return advance

        yield start


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


async def _play_one(
    name: str,
    tally: Tally,
    play: Callable[[], Awaitable[Played]],
) -> None:
    """Play one scenario and print its report; one that cannot finish is a failure with its
    reason on one line (the traceback at ANXIN_LOG_LEVEL=debug), and the next one still runs."""
    from device_sim.scenario.render import render

    try:
        result = await play()
    except Exception as exc:
        log.debug("scenario_crashed", scenario=name, exc_info=True)
        console.print(
            f"{name}: [bold red]FAILED[/] (did not finish: {type(exc).__name__}: {exc})",
            markup=True,
            highlight=False,
        )
        tally.failed += 1
        return
    render(result, console)
    if result.passed:
        tally.passed += 1
    else:
        tally.failed += 1


async def _server_url(settings: Settings) -> str:
    """The Postgres server to make a scratch database on: the configured one, or embedded."""
    from anxin.db import resolve_database_url

    return (await resolve_database_url(settings)).replace("postgresql+asyncpg://", "postgresql://")


async def _play_files(
    settings: Settings,
    scenarios: list[Scenario],
    tally: Tally,
    *,
    real_time: bool,
    external: bool,
) -> None:
    from anxin.broker import EmbeddedBroker, embedded_broker
    from device_sim.harness import engine_for, scratch_database
    from device_sim.region.generate import generate_region
    from device_sim.scenario.player import ScenarioPlayer, play_in_process, seed_plan

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

        mqtt = BrokerAddress.parse(settings.mqtt_url.get_secret_value())
        async with external_sms_side(settings) as (sandbox, sessions):
            with _progress_bar(tally) as bar:
                for scenario in scenarios:

                    async def external_play(scenario: Scenario = scenario) -> Played:
                        plan = generate_region(scenario.region.homes, scenario.region.seed)
                        await seed_plan(sessions, plan)
                        player = ScenarioPlayer(
                            scenario,
                            plan,
                            sessions=sessions,
                            sandbox=sandbox,
                            mqtt=mqtt,
                            clock=None,
                            progress=bar(scenario),
                            web_url=settings.public_url,
                        )
                        return await player.play()

                    await _play_one(scenario.name, tally, external_play)
        return

    broker: EmbeddedBroker | None = None
    if settings.mqtt_url is not None:
        mqtt_url = settings.mqtt_url.get_secret_value()
    else:
        broker = embedded_broker(persistence=False)
        await broker.start()
        mqtt_url = broker.url
    try:
        server = await _server_url(settings)
        with _progress_bar(tally) as bar:
            for scenario in scenarios:

                async def in_process(scenario: Scenario = scenario) -> Played:
                    # A fresh database per scenario: its counts are of its own alerts only.
                    async with scratch_database(server) as url, engine_for(url) as engine:
                        return await play_in_process(
                            scenario,
                            database_url=url,
                            mqtt_url=mqtt_url,
                            engine=engine,
                            real_time=real_time,
                            progress=bar(scenario),
                        )

                await _play_one(scenario.name, tally, in_process)
    finally:
        if broker is not None:
            await broker.stop()


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
    from device_sim.scenario.model import ScenarioError, load_scenario

    settings = _settings()
    try:
        scenarios = [load_scenario(f) for f in files]  # every file checked before anything runs
    except ScenarioError as exc:
        console.print(f"[bold red]bad scenario file[/]\n{exc}")
        raise typer.Exit(2) from exc
    tally = Tally(total=len(scenarios))
    started = time.monotonic()
    play = _play_files(
        settings, scenarios, tally, real_time=real_time or external, external=external
    )
    try:
        run_until_interrupted(play)
    except Interrupted:
        console.print(f"interrupted: {tally.line(time.monotonic() - started)}")
        raise typer.Exit(INTERRUPTED_EXIT) from None
    ok = tally.failed == 0 and tally.passed == tally.total
    colour = "green" if ok else "bold red"
    console.print(f"[{colour}]{tally.line(time.monotonic() - started)}[/]", highlight=False)
    raise typer.Exit(0 if ok else 1)


@sim_app.command("list")
def list_scenarios() -> None:
    """The scenarios that come with Anxin."""
    from device_sim.scenario.model import bundled_scenarios, load_scenario

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
            "dispatcher, web, mosquitto, postgres; ROLE#N kills replica N only; failover, "
            "failover-pgbouncer: the primary of a Patroni cluster lost, each on a platform "
            "of its own, not in the default set)."
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
    voice_after: Annotated[
        float | None,
        typer.Option(
            help="Voice call-outs: the county's voice_after_s for the run (0: every P1 aide "
            "called with the SMS, to measure SOS → call placed; default: the product's 60 s)."
        ),
    ] = None,
) -> None:
    """Load: N homes heartbeating plus an SOS rate; latency, throughput, lost and duplicates."""
    if fault_suite:
        _fault_suite(homes or 500, presses, list(scenario or []), json_out)
        return
    from device_sim.bench.load import run_bench
    from device_sim.bench.options import BenchOptions, parse_fault, parse_replicas
    from device_sim.bench.report import print_report

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
        voice_after_s=voice_after,
    )
    report = _run(run_bench(settings, options, console=console))
    print_report(report, console)
    if json_out is not None:
        json_out.write_text(report.to_json(), encoding="utf-8")
        console.print(f"figures written to {json_out}")
    raise typer.Exit(0 if report.ok else 1)


def _fault_suite(homes: int, presses: int, scenarios: list[str], json_out: Path | None) -> None:
    import dataclasses

    from device_sim.failover_suite import FAILOVER_SCENARIOS, run_failover_suite
    from device_sim.faults.options import SCENARIOS, SuiteOptions, valid_scenario
    from device_sim.faults.report import ScenarioResult, SuiteReport, print_suite
    from device_sim.faults.suite import run_fault_suite

    failovers = [s for s in scenarios if s in FAILOVER_SCENARIOS]
    scenarios = [s for s in scenarios if s not in FAILOVER_SCENARIOS]
    unknown = [s for s in scenarios if not valid_scenario(s)]
    if unknown:
        raise typer.BadParameter(
            f"unknown scenario(s) {unknown}; choose from {SCENARIOS + FAILOVER_SCENARIOS}"
        )
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

    reports: list[SuiteReport] = []
    if scenarios or not failovers:
        reports.append(_run(run_fault_suite(options, console=console, on_result=done)))
    for name in failovers:  # each on a Patroni cluster of its own (device_sim/pg_cluster.py)
        reports.append(
            _run(
                run_failover_suite(
                    options,
                    pgbouncer=name == "failover-pgbouncer",
                    console=console,
                    on_result=done,
                )
            )
        )
    report = dataclasses.replace(
        reports[0],
        scenarios=[s for r in reports for s in r.scenarios],
        setup_s=round(sum(r.setup_s for r in reports), 1),
        wall_s=round(sum(r.wall_s for r in reports), 1),
    )
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
