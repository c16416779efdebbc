"""`anxin registry import|export`: the civil-affairs office's spreadsheets in and out.

Mounted into `anxin` by anxin/cli.py, as every part's commands are.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

registry_app = typer.Typer(
    help="登记册导入导出 / the registry (regions, centres, elders, devices, aides) as CSV or Excel.",
    no_args_is_help=True,
)


@registry_app.command("import")
def registry_import(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CSV or .xlsx files; several files go in parents-first order (regions, "
            "centres, elders, devices, aides).",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            help="What the file holds when its name and headers do not say: regions, centres, "
            "elders, devices or aides."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Check only; store nothing.")] = False,
    strict: Annotated[
        bool, typer.Option(help="Store nothing from a file in which any row is refused.")
    ] = False,
) -> None:
    """Import the registry. Each file is one transaction: good rows are stored, refused rows are
    listed by row and column. Re-importing updates, never duplicates. Exit 1 if a row was refused."""
    from anxin.clock import SystemClock
    from anxin.logging import configure_logging
    from anxin.services import services
    from anxin.settings import Settings
    from registry.apply import import_registry_file
    from registry.columns import APPLY_ORDER, RegistryKind
    from registry.files import parse_file

    try:
        forced = RegistryKind(kind) if kind else None
    except ValueError:
        raise typer.BadParameter(
            f"--kind takes one of {', '.join(k.value for k in RegistryKind)}"
        ) from None
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)

    def order(path: Path) -> int:
        # Files that hold parents go first, by what their sheets hold (cheap: parse only).
        try:
            kinds = [s.kind for s in parse_file(path.read_bytes(), path.name, forced) if s.kind]
        except ValueError:
            return len(APPLY_ORDER)
        return min((APPLY_ORDER.index(k) for k in kinds), default=len(APPLY_ORDER))

    async def main() -> bool:
        all_ok = True
        clock = SystemClock()
        async with services(settings, need_broker=False) as svc:
            for path in sorted(files, key=order):
                report = await import_registry_file(
                    svc.sessions,
                    path.read_bytes(),
                    path.name,
                    now=clock.now(),
                    kind=forced,
                    dry_run=dry_run,
                    strict=strict,
                )
                typer.echo(f"== {path}")
                for line in report.summary_lines():
                    typer.echo("  " + line)
                all_ok = all_ok and report.ok
        return all_ok

    raise typer.Exit(0 if asyncio.run(main()) else 1)


@registry_app.command("export")
def registry_export(
    target: Annotated[
        Path,
        typer.Argument(
            help="A .xlsx file (one sheet per kind), or a directory for one CSV file per kind."
        ),
    ],
    english: Annotated[
        bool, typer.Option(help="English headers and values instead of Chinese.")
    ] = False,
) -> None:
    """Export the registry in the layout `anxin registry import` reads (no device passwords)."""
    from anxin.logging import configure_logging
    from anxin.services import services
    from anxin.settings import Settings
    from registry.export import export_registry

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)

    async def main() -> list[Path]:
        async with services(settings, need_broker=False) as svc:
            return await export_registry(svc.sessions, target, english=english)

    for path in asyncio.run(main()):
        typer.echo(f"wrote {path}")
