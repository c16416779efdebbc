"""The month's visit figures as tables: the rows `anxin figures visits` prints and the .xlsx the
county sends upward (a sheet of rates per region, a sheet of who was missed and why)."""

from __future__ import annotations

import io

from visits import schedule
from visits.service import RegionVisitRate

LEVEL_ZH = {"county": "县", "township": "乡镇", "village": "村"}
KIND_ZH = {"periodic": "定期探访", "major_change": "重大变故后24小时内"}
REASON_EN = {
    "no_aide": "no aide owns the elder",
    "late": "visited after the deadline",
    "rejected": "the report was not counted",
    "not_visited": "not visited",
}

RATE_HEADERS_ZH = ["月份", "地区编码", "地区", "级别", "应探访(次)", "已探访(次)", "探访率",
                   "未到期", "应探访老人", "全部探访老人"]  # fmt: skip
RATE_HEADERS_EN = ["month", "code", "region", "level", "due", "visited", "rate", "pending",
                   "elders due", "elders all visited"]  # fmt: skip
MISSED_HEADERS_ZH = ["村", "老人编号", "姓名", "探访级别", "类型", "期间", "原因", "说明",
                     "负责助老员"]  # fmt: skip
MISSED_HEADERS_EN = ["village", "elder", "name", "tier", "kind", "period", "reason", "detail",
                     "aide"]  # fmt: skip


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.1f}%"


def rate_rows(rows: list[RegionVisitRate], *, english: bool = False) -> list[list[str]]:
    out = [RATE_HEADERS_EN if english else RATE_HEADERS_ZH]
    for r in rows:
        out.append(
            [
                r.month,
                r.code,
                r.name,
                r.level if english else LEVEL_ZH.get(r.level, r.level),
                str(r.due),
                str(r.visited),
                percent(r.rate),
                str(r.pending),
                str(r.elders_due),
                str(r.elders_all_visited),
            ]
        )
    return out


def missed_rows(rows: list[RegionVisitRate], *, english: bool = False) -> list[list[str]]:
    """Who was missed and why: each miss once, from its village's row."""
    out = [MISSED_HEADERS_EN if english else MISSED_HEADERS_ZH]
    for r in rows:
        if r.level != "village":
            continue
        for m in r.missed:
            reason = (
                REASON_EN.get(m.reason, m.reason)
                if english
                else schedule.MISSED_REASONS_ZH.get(m.reason, m.reason)
            )
            out.append(
                [
                    r.name,
                    m.elder_code,
                    m.elder_name,
                    m.tier if english else schedule.TIER_ZH.get(m.tier, m.tier),
                    m.kind if english else KIND_ZH.get(m.kind, m.kind),
                    f"{m.start}–{m.end}" if m.start != m.end else str(m.end),
                    reason,
                    m.detail or "",
                    m.owner_name or "—",
                ]
            )
    return out


def figures_xlsx(rows: list[RegionVisitRate], *, english: bool = False) -> bytes:
    from openpyxl import Workbook

    workbook = Workbook()
    first = workbook.active
    if first is not None:
        workbook.remove(first)
    sheets = (
        ("visit rate" if english else "探访率", rate_rows(rows, english=english)),
        ("missed" if english else "未探访名单", missed_rows(rows, english=english)),
    )
    for title, table in sheets:
        sheet = workbook.create_sheet(title)
        for row in table:
            sheet.append(row)
            # Every cell text (a name typed as "=…" is not a formula), as the registry's export.
            for cell in sheet[sheet.max_row]:
                if cell.data_type == "f":
                    cell.data_type = "s"
        sheet.freeze_panes = "A2"
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
