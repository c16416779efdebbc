"""The weekly SMS digest of visits due (issue 18 item 4). Pure: the elders' statuses
(`schedule.ElderStatus`), `now` and the time zone come in; who is due this week and the text
go out.

- The digest's week is the ISO week (Monday to Sunday) in the deployment's time zone: it is
  sent once a week at a set local weekday and hour (`ANXIN_VISIT_DIGEST_WEEKDAY` / `_HOUR`,
  Monday 08:00), keyed `visit-digest:<responder_id>:<ISO week>` in the outbox.
- Due this week: an elder whose current period still needs its visit and ends by this Sunday,
  an overdue one, or one with an open major change.
- The text fits two SMS segments (UCS-2: 67 characters each when split): as many elders as
  fit, overdue first, then by due date, then "等" and the count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from dispatcher.templates import SIGNATURE_EN, SIGNATURE_ZH, mask_name
from visits.schedule import ElderStatus

# Two concatenated UCS-2 segments (a Chinese SMS): 2 × 67 characters.
MAX_CHARS = 134
KEY_PREFIX = "visit-digest"


def iso_week(now: datetime, timezone: str) -> str:
    """ "2026-W49": the local ISO week `now` falls in."""
    year, week, _ = now.astimezone(ZoneInfo(timezone)).isocalendar()
    return f"{year}-W{week:02d}"


def week_end(now: datetime, timezone: str) -> date:
    """The Sunday that ends the local ISO week of `now`."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    return today + timedelta(days=7 - today.isoweekday())


def send_time(now: datetime, timezone: str, *, weekday: int, hour: int) -> datetime:
    """When this ISO week's digest is due: its `weekday` (1 = Monday) at `hour`, local."""
    local = now.astimezone(ZoneInfo(timezone))
    monday = local.date() - timedelta(days=local.isoweekday() - 1)
    day = monday + timedelta(days=weekday - 1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(timezone))


def is_due(now: datetime, timezone: str, *, weekday: int, hour: int) -> bool:
    """Whether this week's digest may go now (from its send time to the week's end)."""
    return now >= send_time(now, timezone, weekday=weekday, hour=hour)


def digest_key(responder_id: int, week: str) -> str:
    return f"{KEY_PREFIX}:{responder_id}:{week}"


def due_this_week(status: ElderStatus, end: date) -> bool:
    """The elder needs a visit by `end` (the week's Sunday): its period ends by then and is not
    visited, it is overdue, or a major change is open."""
    if status.overdue or status.major_change_due_by is not None:
        return True
    due_by = status.due_by
    return due_by is not None and due_by <= end


@dataclass(frozen=True)
class DigestLine:
    code: str
    name: str
    overdue: bool
    due_by: date | None


def order(lines: Iterable[DigestLine]) -> list[DigestLine]:
    """Overdue first, then the earliest due, then by code."""
    return sorted(lines, key=lambda x: (not x.overdue, x.due_by or date.max, x.code))


def digest_text(lines: Sequence[DigestLine], lang: str = "zh", max_chars: int = MAX_CHARS) -> str:
    """ "【安心】本周待探访：E0012 张XX，E0013 李XX 共2位" — as many as fit in `max_chars`, then
    "等". Names masked as the visit answers are (minimum data in an SMS)."""
    english = lang.startswith("en")
    items = [f"{x.code} {mask_name(x.name)}" for x in order(lines)]
    count = len(items)
    sep, more = (", ", " etc.") if english else ("，", "等")

    def render(shown: list[str], trimmed: bool) -> str:
        listed = sep.join(shown) + (more if trimmed else "")
        if english:
            return f"{SIGNATURE_EN}Visits due this week: {listed} ({count} in all)"
        return f"{SIGNATURE_ZH}本周待探访：{listed} 共{count}位"

    text = render(items, False)
    shown = list(items)
    while len(text) > max_chars and len(shown) > 1:
        shown.pop()
        text = render(shown, True)
    return text
