"""`anxin figures`: the monthly compliance figures for the 15-minute rule, on the command line.

Wired into anxin/cli.py as `app.add_typer(figures_app, name="figures")`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlmodel import col

figures_app = typer.Typer(help="Compliance with the 15-minute rule, per township/county and month.")
console = Console()


@figures_app.callback()
def figures_main() -> None:
    """Compliance with the 15-minute rule, per township/county and month."""


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.1f}%"


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f}"


@figures_app.command("show")
def show(
    month_from: Annotated[str | None, typer.Option(help="First month, YYYY-MM (local).")] = None,
    month_to: Annotated[str | None, typer.Option(help="Last month, YYYY-MM (local).")] = None,
    region: Annotated[
        str | None, typer.Option(help="Region code (a county or township); default all.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Share on scene within the deadline, time to accept / on scene (p50, p90, minutes),
    breaches and false alarms by device kind."""
    from dataclasses import asdict

    from alert_service import figures, service
    from anxin import auth
    from anxin.logging import configure_logging
    from anxin.models import Region
    from anxin.runtime import services
    from anxin.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)

    async def main() -> list[tuple[str, figures.MonthFigures]]:
        async with services(settings, need_broker=False) as svc, svc.sessions() as session:
            now = svc.clock.now()
            tz = settings.timezone
            first = month_from or month_to or figures.month_of(now, tz)
            start, _ = figures.month_bounds(first, tz)
            _, end = figures.month_bounds(month_to or first, tz)
            query = select(Region)
            query = (
                query.where(col(Region.code) == region)
                if region
                else query.where(col(Region.parent_id).is_(None))
            )
            roots = list((await session.execute(query)).scalars())
            if not roots:
                raise typer.BadParameter(f"no region {region!r}")
            scope: set[int] = set()
            for root in roots:
                assert root.id is not None
                scope |= await auth.regions_under(session, root.id)
            rows = await service.compliance(session, scope, start, end, tz, now)
            names = {
                r.id: r.name
                for r in (
                    await session.execute(
                        select(Region).where(col(Region.id).in_({f.region_id for f in rows}))
                    )
                ).scalars()
            }
            return [(names.get(f.region_id, ""), f) for f in rows]

    rows = asyncio.run(main())
    if as_json:
        out = [{"region": name, **asdict(f)} for name, f in rows]
        console.print_json(json.dumps(out, ensure_ascii=False))
        return
    table = Table(title="15分钟应急响应 / the 15-minute rule")
    for header in (
        "month",
        "region",
        "P1/P2",
        "in time",
        "accept p50/p90 min",
        "on scene p50/p90 min",
        "breaches",
        "false alarms",
    ):
        table.add_column(header)
    for name, f in rows:
        table.add_row(
            f.month,
            name,
            str(f.urgent),
            f"{f.on_scene_in_time}/{f.decided} ({_percent(f.on_scene_in_time_share)})",
            f"{_minutes(f.accept_p50_s)} / {_minutes(f.accept_p90_s)}",
            f"{_minutes(f.on_scene_p50_s)} / {_minutes(f.on_scene_p90_s)}",
            str(f.breaches),
            ", ".join(f"{k} {v}" for k, v in f.false_alarms_by_device_kind.items()) or "—",
        )
    console.print(table)
