"""`anxin`: the command line. Every command reads settings once here and passes them in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Annotated, Any

import typer
from rich.console import Console

from anxin.cli_run import Interrupted, run_until_interrupted
from anxin.logging import configure_logging
from anxin.settings import Settings

app = typer.Typer(
    help="安心 Anxin — emergency response for elders at home (one-key SOS, the 15-minute rule).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="Database schema (Alembic) and the demo region.", no_args_is_help=True)
app.add_typer(db_app, name="db")
# Each part keeps its own commands; they are mounted here.
from dispatcher.cli import app as dispatch_app  # noqa: E402

app.add_typer(dispatch_app, name="dispatch", help="Dispatcher: travel-time tables.")
from gateway.cli import devices_app  # noqa: E402

app.add_typer(devices_app, name="devices", help="Devices: broker credentials and ACL.")
from alert_service.cli import figures_app  # noqa: E402

app.add_typer(figures_app, name="figures", help="15-minute compliance figures.")
from visits.cli import figures_visits, visits_app  # noqa: E402

figures_app.command("visits")(figures_visits)
app.add_typer(visits_app, name="visits", help="Care visits: the aides' weekly SMS digest.")
from device_sim.cli import bench_command, sim_app  # noqa: E402

app.add_typer(sim_app, name="sim", help="Scenarios: play YAML timelines and check outcomes.")
app.command("bench")(bench_command)
from registry.cli import registry_app  # noqa: E402

app.add_typer(registry_app, name="registry")
console = Console()


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return settings


def _run(coro: Coroutine[Any, Any, Any]) -> None:
    """Run until done or Ctrl-C/SIGTERM, then shut down cleanly; exit 0 (stopping is how the
    demo and the roles end), with no traceback."""
    with contextlib.suppress(Interrupted):
        run_until_interrupted(coro)


@app.command()
def demo(
    homes: Annotated[
        int | None, typer.Option(help="Homes in the demo county (default ~120).")
    ] = None,
    sos_every: Annotated[float, typer.Option(help="Seconds between simulated SOS presses.")] = 30.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    exit_after_resolved: Annotated[
        int | None, typer.Option(help="Stop once this many alerts have been resolved.")
    ] = None,
) -> None:
    """Run the whole platform in one process on embedded defaults, with simulated homes and aides."""
    from device_sim.demo import run_demo

    settings = Settings()
    # The demo's own lines are its report; every role's info log between them would bury the
    # acks and closed alerts. ANXIN_LOG_LEVEL=info brings the logs back.
    explicit = "log_level" in settings.model_fields_set
    configure_logging(settings.log_level if explicit else "warning", settings.log_json)
    _run(
        run_demo(
            settings,
            homes=homes,
            sos_every=sos_every,
            duration=duration,
            exit_after_resolved=exit_after_resolved,
            console=console,
        )
    )


@app.command()
def run(
    roles: Annotated[
        list[str], typer.Argument(help="One or more of: gateway, alerts, dispatcher, web.")
    ],
    gateway_id: Annotated[
        str, typer.Option(help="MQTT client id of this gateway replica (unique per replica).")
    ] = "anxin-gateway",
) -> None:
    """Run roles against the configured Postgres and broker (ANXIN_DATABASE_URL, ANXIN_MQTT_URL)."""
    from anxin.runtime import ROLES, role_tasks, run_until_stopped
    from anxin.services import services

    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise typer.BadParameter(
            f"unknown role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}"
        )
    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        need_broker = "gateway" in roles
        name = f"anxin-{'+'.join(roles)}" + (f"-{gateway_id}" if "gateway" in roles else "")
        async with services(settings, need_broker=need_broker, application_name=name) as svc:
            console.print(
                f"anxin: running {', '.join(roles)}"
                + (f" (web on {settings.public_url})" if "web" in roles else "")
            )
            await run_until_stopped(
                role_tasks(svc, tuple(roles), stop, gateway_id=gateway_id), stop
            )

    _run(main())


@app.command()
def doctor(
    strict: Annotated[
        bool, typer.Option(help="Treat warnings (development defaults) as problems too.")
    ] = False,
) -> None:
    """Check this deployment's configuration and connections; exit 1 when something is wrong."""
    from anxin.doctor import Check, exit_code, load_settings, render, run_checks
    from dispatcher.provider_checks import provider_checks

    async def every_check() -> list[Check]:
        checks = await run_checks()
        settings, _ = load_settings()
        # The provider's own answers (credentials, templates), from the part that knows it.
        return checks + (await provider_checks(settings) if settings is not None else [])

    checks = asyncio.run(every_check())
    typer.echo(render(checks))
    raise typer.Exit(exit_code(checks, strict))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    from anxin.db import migrate, resolve_database_url

    settings = _settings()

    async def main() -> None:
        url = await resolve_database_url(settings)
        await migrate(url)
        console.print("schema is at the newest revision")

    _run(main())


@db_app.command("seed")
def db_seed(
    homes: Annotated[
        int | None, typer.Option(help="Homes in the demo county (default ~120).")
    ] = None,
) -> None:
    """Load the deterministic demo county (idempotent: a second run changes nothing)."""
    from anxin.services import services
    from device_sim.demo import seed
    from device_sim.region.generate import generate_region

    settings = _settings()

    async def main() -> None:
        async with services(settings, need_broker=False) as svc:
            created = await seed(svc, generate_region(homes))
        console.print(
            "demo region seeded" if created else "demo region already present: nothing changed"
        )

    _run(main())


if __name__ == "__main__":
    app()
