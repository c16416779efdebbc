"""`anxin dispatch …`: dispatcher commands (wired into anxin/cli.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Dispatcher: routed travel times and the SMS outbox.", no_args_is_help=True)


@app.callback()
def dispatch() -> None:
    """Dispatcher commands (a group even with one command, so its name is stable)."""


@app.command("import-travel-times")
def import_travel_times(
    csv_file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV with columns elder_code, responder_phone, minutes (road-routed).",
        ),
    ],
    source: Annotated[
        str, typer.Option(help="Where the times come from (router and date), kept per row.")
    ] = "",
) -> None:
    """Import a travel-time table from a road router; it overrides the straight-line estimate.

    Importing the same responder and home again replaces the older time. Refused lines are
    listed by line number and skipped; the rest are stored. Exit 1 if a line was refused.
    """
    from anxin.db import transaction
    from anxin.logging import configure_logging
    from anxin.services import services
    from anxin.settings import Settings
    from dispatcher.ranking import import_travel_times as store
    from dispatcher.travel_table import parse_travel_table

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    rows, errors = parse_travel_table(csv_file.read_text(encoding="utf-8-sig"))

    async def main() -> int:
        async with (
            services(settings, need_broker=False) as svc,
            transaction(svc.sessions) as session,
        ):
            stored, unknown = await store(
                session, rows, source=source or csv_file.name, now=svc.clock.now()
            )
        errors.extend(unknown)
        return stored

    stored = asyncio.run(main())
    # As the registry import reports: a count line, then each refused line in line order, in
    # Chinese and English; exit 1 when any line was refused (the good ones are stored).
    typer.echo(f"== {csv_file}")
    typer.echo(f"  行程时间 travel times: 存入 {stored} stored, 拒绝 {len(errors)} lines refused")
    for error in sorted(errors, key=lambda e: e.line):
        typer.echo(f"  拒绝 refused — {error}")
    raise typer.Exit(1 if errors else 0)
