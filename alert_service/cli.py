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

from alert_service import figures

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

    from alert_service import compliance as alert_compliance
    from anxin import auth
    from anxin.logging import configure_logging
    from anxin.models import Region
    from anxin.services import services
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
            rows = await alert_compliance.compliance(session, scope, start, end, tz, now)
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
    console.print(figures_table(rows, english=settings.language == "en"))


@figures_app.command("coverage")
def coverage_cmd(
    region: Annotated[
        str | None, typer.Option(help="Region code (a county or township); default all.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON (every elder's fastest aide) instead of lists.")
    ] = False,
) -> None:
    """Elders no on-duty aide can reach within the response minutes, and villages with no aide
    on duty (each elder's fastest on-duty aide by estimated arrival, as the dispatcher ranks)."""
    from dataclasses import asdict

    from alert_service import coverage_service
    from alert_service.coverage import Coverage
    from anxin import auth
    from anxin.logging import configure_logging
    from anxin.models import Region
    from anxin.services import services
    from anxin.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)

    async def main() -> Coverage:
        async with services(settings, need_broker=False) as svc, svc.sessions() as session:
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
            return await coverage_service.coverage_in(
                session, region_ids=scope, now=svc.clock.now()
            )

    found = asyncio.run(main())
    uncovered = found.uncovered
    if as_json:
        out = {
            "elders": len(found.elders),
            "uncovered": [asdict(e) for e in uncovered],
            "villages_without_aide": [asdict(v) for v in found.villages_without_aide],
            "reach": [asdict(e) for e in found.elders],
        }
        console.print_json(json.dumps(out, ensure_ascii=False))
        return
    english = settings.language == "en"
    console.print(
        f"{len(uncovered)} of {len(found.elders)} elders: no on-duty aide within the response time"
        if english
        else f"{len(found.elders)} 位老人中 {len(uncovered)} 位：在岗助老员无法在时限内到达"
    )
    table = Table(show_lines=False)
    for zh, en in (
        ("编号", "Code"),
        ("姓名", "Name"),
        ("乡镇", "Township"),
        ("村", "Village"),
        ("最快助老员", "Fastest aide"),
        ("预计(分)", "ETA (min)"),
        ("时限", "Limit"),
    ):
        table.add_column(en if english else zh)
    for e in uncovered:
        table.add_row(
            e.code,
            e.name,
            e.township,
            e.village
            + (" (seasonal)" if english and e.seasonal else " (季节)" if e.seasonal else ""),
            e.aide_name or ("none on duty" if english else "无人在岗"),
            "—" if e.eta_minutes is None else f"{e.eta_minutes:.1f}",
            str(e.respond_minutes),
        )
    if uncovered:
        console.print(table)
    gaps = found.villages_without_aide
    console.print(
        ("Villages with no aide on duty: " if english else "无在岗助老员的村：")
        + (
            ("; " if english else "；").join(f"{v.township} {v.village} ({v.elders})" for v in gaps)
            or "—"
        )
    )


# (header, English header, no_wrap): short two-line headers and unbroken figures keep the table
# within 80 columns; only the region and false-alarm cells wrap.
_COLUMNS = (
    ("月份", "month", True),
    ("地区", "region", False),
    ("紧急\n警报", "P1/P2", True),
    ("按时到场", "on scene\nin time", True),
    ("接单分钟\np50/p90", "accept\np50/p90", True),
    ("到场分钟\np50/p90", "on scene\np50/p90", True),
    ("超时", "late", True),
    ("误报\n(按设备)", "false\nalarms", False),
)


def figures_table(rows: list[tuple[str, figures.MonthFigures]], *, english: bool = False) -> Table:
    """The monthly figures as the operators read them: Chinese unless ANXIN_LANGUAGE=en."""
    from anxin.schemas import DEVICE_KIND_ZH, DeviceKind

    table = Table(
        title="the 15-minute rule" if english else "15分钟应急响应达标情况",
        caption="on scene in time: of the urgent alerts decided; minutes from the clock's start."
        if english
        else "按时到场：已有结果的紧急警报中在时限内到场的件数与比例；分钟自响应计时起算。",
        caption_justify="left",
    )
    for zh, en, no_wrap in _COLUMNS:
        table.add_column(en if english else zh, no_wrap=no_wrap, min_width=None if no_wrap else 6)
    for name, f in rows:
        kinds = f.false_alarms_by_device_kind.items()
        table.add_row(
            f.month,
            name,
            str(f.urgent),
            f"{f.on_scene_in_time}/{f.decided} {_percent(f.on_scene_in_time_share)}",
            f"{_minutes(f.accept_p50_s)}/{_minutes(f.accept_p90_s)}",
            f"{_minutes(f.on_scene_p50_s)}/{_minutes(f.on_scene_p90_s)}",
            str(f.breaches),
            (", " if english else "、").join(
                f"{k if english else DEVICE_KIND_ZH.get(DeviceKind(k), k)} {v}"
                if k in DeviceKind.__members__
                else f"{k} {v}"
                for k, v in kinds
            )
            or "—",
        )
    return table
