"""What an import found: refused rows and notices at a place a person can find in the
spreadsheet, counts per sheet, and the report the CLI prints and the API returns as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from registry.columns import SHEET_TITLES, RegistryKind


@dataclass(frozen=True)
class Finding:
    """A refused row (or a notice) at a place a person can find in the spreadsheet."""

    sheet: str
    row: int | None  # as the spreadsheet numbers it (header = 1 unless a title row is above)
    column: str | None  # the header as written in the file
    message: str

    def __str__(self) -> str:
        where = [self.sheet]
        if self.row is not None:
            where.append(f"第{self.row}行 row {self.row}")
        if self.column:
            where.append(f"列「{self.column}」")
        return f"{' '.join(where)}: {self.message}"


@dataclass
class SheetReport:
    sheet: str
    kind: RegistryKind | None
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[Finding] = field(default_factory=list)
    notices: list[Finding] = field(default_factory=list)

    @property
    def refused_rows(self) -> int:
        return len({f.row for f in self.refused if f.row is not None})

    @property
    def sheet_refused(self) -> bool:
        """The whole sheet was refused (a missing column, an unknown kind)."""
        return any(f.row is None for f in self.refused)


@dataclass
class ImportReport:
    source: str
    sheets: list[SheetReport] = field(default_factory=list)
    dry_run: bool = False
    strict: bool = False
    committed: bool = False
    # Set when nothing was stored for a reason beyond single rows (database refusal, strict).
    failure: str | None = None

    @property
    def refused(self) -> list[Finding]:
        """Sheet by sheet, in row order (a sheet-wide refusal first), whichever check found
        them: the parse, a duplicate key, or a reference the database did not have."""
        return [f for s in self.sheets for f in sorted(s.refused, key=_row_order)]

    @property
    def notices(self) -> list[Finding]:
        return [f for s in self.sheets for f in s.notices]

    @property
    def changed(self) -> int:
        return sum(s.created + s.updated for s in self.sheets)

    @property
    def ok(self) -> bool:
        return not self.refused and self.failure is None

    def as_dict(self) -> dict[str, Any]:
        """JSON for the web API: counts per sheet, and every refusal and notice with its place."""

        def finding(f: Finding) -> dict[str, Any]:
            return {"sheet": f.sheet, "row": f.row, "column": f.column, "message": f.message}

        return {
            "source": self.source,
            "committed": self.committed,
            "dry_run": self.dry_run,
            "strict": self.strict,
            "failure": self.failure,
            "sheets": [
                {
                    "sheet": s.sheet,
                    "kind": s.kind.value if s.kind else None,
                    "rows": s.rows,
                    "created": s.created,
                    "updated": s.updated,
                    "unchanged": s.unchanged,
                    "refused_rows": s.refused_rows,
                }
                for s in self.sheets
            ],
            "refused": [finding(f) for f in self.refused],
            "notices": [finding(f) for f in self.notices],
        }

    def summary_lines(self) -> list[str]:
        lines: list[str] = []
        for s in self.sheets:
            kind = f"{SHEET_TITLES[s.kind]}/{s.kind.value}" if s.kind else "?"
            lines.append(
                f"{s.sheet} ({kind}): 新增 {s.created} created, 更新 {s.updated} updated, "
                f"未变 {s.unchanged} unchanged, 拒绝 {s.refused_rows} rows refused"
            )
        if self.failure:
            lines.append(f"未导入任何数据 / nothing was imported: {self.failure}")
        elif self.dry_run:
            lines.append("仅检查，未写入 / dry run: nothing was written")
        for finding in self.refused:
            lines.append(f"拒绝 refused — {finding}")
        for sheet in self.sheets:
            for line in _folded(sorted(sheet.notices, key=_row_order)):
                lines.append(f"提示 note — {line}")
        return lines


def _row_order(finding: Finding) -> int:
    return -1 if finding.row is None else finding.row


def _rows_text(rows: Sequence[int], shown: int = 5) -> str:
    """2, 3, 4, 5, 9 → 2–5、9 (at most `shown` runs, then …)."""
    runs: list[tuple[int, int]] = []
    for row in sorted(set(rows)):
        if runs and row == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], row)
        else:
            runs.append((row, row))
    text = "、".join(f"{a}–{b}" if b > a else str(a) for a, b in runs[:shown])
    return text + ("…" if len(runs) > shown else "")


FOLD_AT: Final = 4  # this many identical notes and more are one line with a count


def _folded(findings: Sequence[Finding]) -> list[str]:
    """Notes as lines; the same note on many rows (a thousand devices without a password) is
    one line with the count and the rows, in the place of its first row."""
    groups: dict[tuple[str, str | None, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.sheet, f.column, f.message), []).append(f)
    lines: list[str] = []
    for (sheet, column, message), same in groups.items():
        rows = [f.row for f in same if f.row is not None]
        if len(rows) < FOLD_AT:
            lines.extend(str(f) for f in same)
            continue
        where = f"{sheet} 列「{column}」" if column else sheet
        lines.append(
            f"{where}: {message}（共 {len(rows)} 行 / {len(rows)} rows: 第{_rows_text(rows)}行）"
        )
    return lines
