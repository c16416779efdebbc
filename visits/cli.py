"""`anxin figures visits`: the month's visit rate per village, township and county, who was
missed and why; a table, `--json`, or `--xlsx FILE` (the workbook the county sends upward).
`anxin visits send-digests [--dry-run]`: the aides' weekly SMS digest of visits due.

Registered beside `anxin figures show` in anxin/cli.py (`figures_app.command("visits")`), since
alert_service (which holds `figures_app`) may not import visits."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from visits import export, schedule
from visits.service import RegionVisitRate

console = Console()
visits_app = typer.Typer(no_args_is_help=True)


def figures_visits(
    month: Annotated[
        str | None, typer.Option(help="The month, YYYY-MM (local); default this one.")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Region code (county, township or village); default all.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    xlsx: Annotated[Path | None, typer.Option(help="Also write the .xlsx workbook here.")] = None,
) -> None:
    """The monthly visit rate (探访率): visited ÷ due, and who was missed and why."""
    from sqlalchemy import select
    from sqlmodel import col

    from anxin import auth
    from anxin.logging import configure_logging
    from anxin.models import Region, pk
    from anxin.services import services
    from anxin.settings import Settings
    from visits.service import month_figures

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if month is not None:
        try:
            schedule.parse_month(month)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None

    async def main() -> tuple[str, list[RegionVisitRate]]:
        async with services(settings, need_broker=False) as svc, svc.sessions() as session:
            now = svc.clock.now()
            chosen = month or schedule.local_date(now, settings.timezone).strftime("%Y-%m")
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
                scope |= await auth.regions_under(session, pk(root))
            rows = await month_figures(
                session, region_ids=scope, month=chosen, now=now, timezone=settings.timezone
            )
            return chosen, rows

    chosen, rows = asyncio.run(main())
    english = settings.language == "en"
    if xlsx is not None:
        xlsx.write_bytes(export.figures_xlsx(rows, english=english))
    if as_json:
        console.print_json(json.dumps([asdict(r) for r in rows], ensure_ascii=False, default=str))
        return
    console.print(_table(export.rate_rows(rows, english=english), chosen, english))
    missed = export.missed_rows(rows, english=english)
    if len(missed) > 1:
        console.print(_table(missed, chosen, english, missed=True))


def _table(rows: list[list[str]], month: str, english: bool, *, missed: bool = False) -> Table:
    if missed:
        title = f"missed visits, {month}" if english else f"{month} 未探访名单"
    else:
        title = f"visit rate, {month}" if english else f"{month} 探访关爱月探访率"
    table = Table(title=title)
    for header in rows[0]:
        table.add_column(header)
    for row in rows[1:]:
        table.add_row(*row)
    return table


@visits_app.command("send-digests")
def send_digests(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print each aide's digest; write no SMS.")
    ] = False,
) -> None:
    """Write this week's SMS digest of visits due for each aide (once per aide and week, as
    the alerts role does from ANXIN_VISIT_DIGEST_WEEKDAY/HOUR); the dispatcher sends them."""
    from anxin.db import transaction
    from anxin.logging import configure_logging
    from anxin.services import services
    from anxin.settings import Settings
    from visits.service import DigestRun, queue_digests

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)

    async def main() -> DigestRun:
        async with (
            services(settings, need_broker=False) as svc,
            transaction(svc.sessions) as session,
        ):
            return await queue_digests(
                session,
                now=svc.clock.now(),
                timezone=settings.timezone,
                daily_limit=settings.sms_daily_limit,
                dry_run=dry_run,
            )

    run = asyncio.run(main())
    for responder_id, text in sorted(run.queued.items()):
        typer.echo(f"{responder_id}\t{text}")  # whole lines: rich would wrap a long SMS
    verb = "would write" if dry_run else "written"
    console.print(
        f"{run.week}: {len(run.queued)} {verb}, {len(run.already)} already written, "
        f"{len(run.deferred)} deferred (daily-limit reserve)",
        markup=False,
        highlight=False,
    )
