"""What the fault suite found, per scenario (JSON-ready dataclasses), and its table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from device_sim.bench.report import Percentiles


@dataclass
class ScenarioResult:
    scenario: str
    fault: str
    messages_sent: int  # SOS presses (first sends)
    resends: int  # the same event sent again by a device that had no ack yet
    alerts_expected: int
    alerts_found: int
    duplicates: int
    missing: int
    max_delay_s: float | None
    sos_to_callout: Percentiles
    steps_expected: int
    steps_seen: int
    wall_s: float
    detail: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.missing == 0


@dataclass
class SuiteReport:
    homes: int
    presses_per_scenario: int
    replicas: dict[str, int]
    scenarios: list[ScenarioResult]
    setup_s: float
    wall_s: float

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenarios)

    def to_json(self) -> str:
        data = asdict(self) | {"ok": self.ok}
        for item, result in zip(data["scenarios"], self.scenarios, strict=True):
            item["ok"] = result.ok
        return json.dumps(data, indent=2, ensure_ascii=False)


def suite_table(report: SuiteReport) -> Table:
    table = Table(
        title=f"anxin fault suite — {report.presses_per_scenario} SOS from {report.homes} homes "
        "per scenario; roles " + ", ".join(f"{r}×{n}" for r, n in report.replicas.items())
    )
    for column, justify in (
        ("scenario", "left"),
        ("messages sent", "right"),
        ("alerts expected", "right"),
        ("alerts found", "right"),
        ("duplicates", "right"),
        ("missing", "right"),
        ("max delay", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for s in report.scenarios:
        bad = "bold red" if not s.ok else ""
        table.add_row(
            s.scenario,
            f"{s.messages_sent} (+{s.resends} resent)",
            str(s.alerts_expected),
            str(s.alerts_found),
            f"[{bad or 'green'}]{s.duplicates}[/]",
            f"[{bad or 'green'}]{s.missing}[/]",
            f"{s.max_delay_s:.1f} s" if s.max_delay_s is not None else "—",
        )
    return table


def print_suite(report: SuiteReport, console: Console) -> None:
    console.print(suite_table(report))
    for s in report.scenarios:
        line = (
            f"{s.scenario}: {s.fault}; steps {s.steps_seen}/{s.steps_expected}; "
            f"SOS → call-out p50 {s.sos_to_callout.p50_ms} ms p99 {s.sos_to_callout.p99_ms} ms; "
            f"{s.wall_s:g} s"
        )
        if s.detail:
            line += f"; {s.detail}"
        console.print(line)
        for note in s.notes:
            console.print(f"  [yellow]note:[/] {note}")
    console.print(f"setup {report.setup_s:g} s, whole suite {report.wall_s:g} s")
    console.print(
        "[green]OK: nothing lost, nothing doubled[/]"
        if report.ok
        else "[bold red]LOST OR DOUBLED[/]"
    )


def report_text(report: SuiteReport) -> str:
    console = Console(record=True, width=140, color_system=None)
    print_suite(report, console)
    return console.export_text()
