"""A played scenario as a table on the terminal: each check pass/fail, then the timelines of
alerts that failed one."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from device_sim.scenario.checks import ScenarioResult


def render(result: ScenarioResult, console: Console) -> None:
    table = Table(title=f"{result.name} ({result.mode}, {result.real_seconds:.1f} s real)")
    for column in ("", "subject", "check", "expected", "actual"):
        table.add_column(column)
    for check in result.checks:
        mark = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
        table.add_row(mark, check.subject, check.what, check.expected, check.actual)
    console.print(table)
    for line in result.timelines:
        console.print(line, markup=False, highlight=False)
    verdict = (
        "[green]PASSED[/]" if result.passed else f"[bold red]FAILED[/] ({len(result.failures())})"
    )
    console.print(f"{result.name}: {verdict}")
