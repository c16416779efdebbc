"""Which care visits are due when, and whether each was made. Pure: the facts about elders,
visits and major changes come in, the dues and the month's figures go out; `now` and the time
zone are arguments (issue 18).

The plan (`VisitPlan`) sorts an elder into a tier by the civil-affairs categories and gives
each tier a frequency. The periods are calendar ones in the deployment's time zone, so the
county's monthly figure counts whole periods:

- `month`: the calendar month; `quarter`: the calendar quarter (its visit is due by the
  quarter's last day, so a quarterly elder counts in March, June, September and December);
- `week`: month-aligned weeks, days 1–7, 8–14, 15–21 and 22 to the month's end (four a month,
  the last one 7–10 days), so no week straddles two months' figures;
- a major change (`MajorChangeFact`): one visit within `major_change_hours` of the mark.

One counted visit anywhere in a period satisfies it. A period that has not ended is "pending"
(neither due nor missed yet) unless it is already visited.
"""

from __future__ import annotations

import calendar
import functools
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

# The registry's category flags (`anxin.models.Elder` columns), with the words operators use.
CATEGORIES: dict[str, str] = {
    "extreme_poverty": "特困",
    "low_income": "低保",
    "living_alone": "独居",
    "empty_nest": "空巢",
    "left_behind": "留守",
    "advanced_age": "高龄",
    "disabled": "失能",
    "semi_disabled": "半失能",
    "dementia": "失智",
    "severe_disability": "重残",
    "family_planning_special": "计划生育特殊家庭",
}


class Frequency(StrEnum):
    week = "week"
    month = "month"
    quarter = "quarter"
    none = "none"  # no periodic visit (a major change still makes one due)


TIERS = ("high", "key", "other")
TIER_ZH = {"high": "高风险", "key": "重点", "other": "一般"}


class DueKind(StrEnum):
    periodic = "periodic"
    major_change = "major_change"


class State(StrEnum):
    visited = "visited"
    missed = "missed"
    pending = "pending"  # the period has not ended and no visit yet


# Why a due visit was missed (the figures' "who was missed and why").
MISSED_REASONS_ZH = {
    "no_aide": "无负责助老员",
    "late": "逾期才探访",  # a major change's visit after its deadline
    "rejected": "探访记录未被采纳",
    "not_visited": "未探访",
}


@dataclass(frozen=True)
class VisitPlan:
    """A region's visit plan: tiers by category, a frequency per tier. A category entry
    "a+b" means both at once (独居+高龄)."""

    high_every: Frequency = Frequency.week
    key_every: Frequency = Frequency.month
    other_every: Frequency = Frequency.quarter
    high_categories: tuple[str, ...] = (
        "extreme_poverty",
        "disabled",
        "dementia",
        "severe_disability",
        "living_alone+advanced_age",
    )
    key_categories: tuple[str, ...] = (
        "living_alone",
        "empty_nest",
        "left_behind",
        "low_income",
        "family_planning_special",
        "semi_disabled",
        "advanced_age",
    )
    major_change_hours: int = 24

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> VisitPlan:
        """The plan a merged snapshot describes (unknown keys ignored; see `check_override`)."""
        known = check_override({k: v for k, v in data.items() if k in _FIELDS})
        return cls(**known)

    def snapshot(self) -> dict[str, Any]:
        return {
            "high_every": self.high_every.value,
            "key_every": self.key_every.value,
            "other_every": self.other_every.value,
            "high_categories": list(self.high_categories),
            "key_categories": list(self.key_categories),
            "major_change_hours": self.major_change_hours,
        }

    def tier_of(self, categories: Iterable[str]) -> str:
        return _tier(self, frozenset(categories))

    def every(self, tier: str) -> Frequency:
        return {"high": self.high_every, "key": self.key_every}.get(tier, self.other_every)


@functools.lru_cache(maxsize=4096)
def _tier(plan: VisitPlan, flags: frozenset[str]) -> str:
    """Cached: a county has a few plans and a few dozen category combinations, 10⁵ elders."""
    for tier, rules in (("high", plan.high_categories), ("key", plan.key_categories)):
        if any(frozenset(rule.split("+")) <= flags for rule in rules):
            return tier
    return "other"


_FIELDS = (
    "high_every",
    "key_every",
    "other_every",
    "high_categories",
    "key_categories",
    "major_change_hours",
)


def check_override(data: Mapping[str, Any]) -> dict[str, Any]:
    """A region's own settings checked and typed; raises ValueError naming the bad key."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS:
            raise ValueError(f"{key}: not a visit-plan setting")
        if key.endswith("_every"):
            try:
                out[key] = Frequency(value)
            except ValueError:
                raise ValueError(f"{key}: one of week, month, quarter, none") from None
        elif key.endswith("_categories"):
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key}: a list of categories")
            for rule in value:
                unknown = [c for c in rule.split("+") if c not in CATEGORIES]
                if unknown:
                    raise ValueError(f"{key}: unknown category {unknown[0]!r}")
            out[key] = tuple(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 168:
                raise ValueError(f"{key}: whole hours, 1 to 168")
            out[key] = value
    return out


def plan_for(overrides: Sequence[Mapping[str, Any]]) -> VisitPlan:
    """The plan of a village from its chain's own settings, nearest first (village, township,
    county), as `alert_service.regions.ladder_for` merges ladders: county first, village last."""
    merged: dict[str, Any] = {}
    for own in reversed(overrides):
        merged.update(own)
    return VisitPlan.from_snapshot(merged)


# --- periods ----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Period:
    start: date
    end: date  # inclusive

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def period_of(every: Frequency, day: date) -> Period | None:
    """The period of `every` that holds `day` (None for `none`)."""
    if every is Frequency.month:
        return Period(day.replace(day=1), _month_end(day.year, day.month))
    if every is Frequency.quarter:
        first = 3 * ((day.month - 1) // 3) + 1
        return Period(date(day.year, first, 1), _month_end(day.year, first + 2))
    if every is Frequency.week:
        if day.day >= 22:
            return Period(day.replace(day=22), _month_end(day.year, day.month))
        start = 1 + 7 * ((day.day - 1) // 7)
        return Period(day.replace(day=start), day.replace(day=start + 6))
    return None


def periods_ending_in(every: Frequency, year: int, month: int) -> list[Period]:
    """The periods whose last day falls in the month (the month's figures count these)."""
    end = _month_end(year, month)
    if every is Frequency.week:
        return [period_of(every, date(year, month, d)) for d in (1, 8, 15, 22)]  # type: ignore[misc]
    if every is Frequency.month:
        return [Period(date(year, month, 1), end)]
    if every is Frequency.quarter:
        return [period_of(every, end)] if month % 3 == 0 else []  # type: ignore[list-item]
    return []


def parse_month(month: str) -> tuple[int, int]:
    """ "2026-11" → (2026, 11); raises ValueError otherwise."""
    year, sep, mon = month.partition("-")
    if not sep or len(year) != 4 or not year.isdigit() or not mon.isdigit():
        raise ValueError(f"{month!r}: a month is YYYY-MM")
    number = int(mon)
    if not 1 <= number <= 12:
        raise ValueError(f"{month!r}: a month is YYYY-MM")
    return int(year), number


def month_bounds(month: str, timezone: str) -> tuple[datetime, datetime]:
    """[start, end) of a local month, as aware datetimes."""
    year, mon = parse_month(month)
    tz = ZoneInfo(timezone)
    nxt = (year + mon // 12, mon % 12 + 1)
    return datetime(year, mon, 1, tzinfo=tz), datetime(nxt[0], nxt[1], 1, tzinfo=tz)


def local_date(at: datetime, timezone: str) -> date:
    return at.astimezone(ZoneInfo(timezone)).date()


# --- facts in, dues out ---------------------------------------------------------------------


@dataclass(frozen=True)
class ElderFacts:
    elder_id: int
    village_id: int
    categories: frozenset[str]
    owner_id: int | None = None  # the aide who owns the elder's visits
    archived_on: date | None = None


@dataclass(frozen=True)
class VisitFact:
    elder_id: int
    visited_at: datetime
    local_date: date
    counted: bool = True
    reject_reason: str | None = None


@dataclass(frozen=True)
class MajorChangeFact:
    elder_id: int
    marked_at: datetime
    due_by: datetime


@dataclass(frozen=True)
class Due:
    elder_id: int
    tier: str
    kind: DueKind
    start: date
    end: date  # the last local day the visit may be made
    due_by: datetime | None = None  # a major change's deadline (exact)
    marked_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    due: Due
    state: State
    visit_date: date | None = None
    reason: str | None = None  # for a miss: a key of MISSED_REASONS_ZH
    detail: str | None = None  # e.g. the reject reason, the late visit's date


def month_dues(
    elders: Iterable[ElderFacts],
    plans: Mapping[int, VisitPlan],
    month: str,
    changes: Iterable[MajorChangeFact],
    timezone: str,
) -> list[Due]:
    """Every visit due in the month: the periods of each elder's tier ending in it (none for an
    elder archived by the period's end), and the major changes whose deadline falls in it.
    `plans` maps a village id to its plan (a village missing from it gets the defaults)."""
    year, mon = parse_month(month)
    default = VisitPlan()
    ending: dict[Frequency, list[Period]] = {f: periods_ending_in(f, year, mon) for f in Frequency}
    tiers: dict[int, str] = {}
    dues: list[Due] = []
    for elder in elders:
        plan = plans.get(elder.village_id, default)
        tier = plan.tier_of(elder.categories)
        tiers[elder.elder_id] = tier
        for p in ending[plan.every(tier)]:
            if elder.archived_on is not None and elder.archived_on <= p.end:
                continue
            dues.append(Due(elder.elder_id, tier, DueKind.periodic, p.start, p.end))
    for change in changes:
        change_tier = tiers.get(change.elder_id)
        end = local_date(change.due_by, timezone)
        if change_tier is None or (end.year, end.month) != (year, mon):
            continue
        start = local_date(change.marked_at, timezone)
        dues.append(
            Due(
                change.elder_id,
                change_tier,
                DueKind.major_change,
                start,
                end,
                due_by=change.due_by,
                marked_at=change.marked_at,
            )
        )
    return dues


@dataclass
class _ElderVisits:
    counted_dates: list[date] = field(default_factory=list)
    counted_times: list[datetime] = field(default_factory=list)
    rejected: list[tuple[date, str]] = field(default_factory=list)


def _index(visits: Iterable[VisitFact]) -> dict[int, _ElderVisits]:
    by_elder: dict[int, _ElderVisits] = defaultdict(_ElderVisits)
    for v in visits:
        slot = by_elder[v.elder_id]
        if v.counted:
            slot.counted_dates.append(v.local_date)
            slot.counted_times.append(v.visited_at)
        else:
            slot.rejected.append((v.local_date, v.reject_reason or ""))
    for slot in by_elder.values():
        slot.counted_dates.sort()
        slot.counted_times.sort()
    return by_elder


_NONE = _ElderVisits()


def assess(
    dues: Iterable[Due],
    visits: Iterable[VisitFact],
    owners: Mapping[int, int | None],
    now: datetime,
    timezone: str,
) -> list[Outcome]:
    """Whether each due visit was made: a counted visit within its period (a major change's:
    between the mark and its deadline). Not made and not over: pending. Missed, with why: no
    aide owns the elder (`owners` maps elder → aide), a major change's visit came only after its
    deadline, the only report in the period was rejected, or no visit at all."""
    today = local_date(now, timezone)
    by_elder = _index(visits)
    out: list[Outcome] = []
    for due in dues:
        seen = by_elder.get(due.elder_id, _NONE)
        if due.kind is DueKind.major_change:
            assert due.due_by is not None and due.marked_at is not None
            times = seen.counted_times
            i = bisect_left(times, due.marked_at)
            if i < len(times) and times[i] <= due.due_by:
                out.append(Outcome(due, State.visited, local_date(times[i], timezone)))
                continue
            if now <= due.due_by:
                out.append(Outcome(due, State.pending))
                continue
            late = times[i] if i < len(times) else None
            late_day = local_date(late, timezone) if late is not None else None
        else:
            dates = seen.counted_dates
            i = bisect_left(dates, due.start)
            if i < len(dates) and dates[i] <= due.end:
                out.append(Outcome(due, State.visited, dates[i]))
                continue
            if today <= due.end:
                out.append(Outcome(due, State.pending))
                continue
            # A later visit belongs to a later period: a missed period is not "late".
            late_day = None
        out.append(_missed(due, seen, owners.get(due.elder_id), late_day))
    return out


def _missed(due: Due, seen: _ElderVisits, owner: int | None, late_day: date | None) -> Outcome:
    if owner is None:
        return Outcome(due, State.missed, reason="no_aide")
    if late_day is not None:
        return Outcome(due, State.missed, reason="late", detail=late_day.isoformat())
    rejected = [r for d, r in seen.rejected if due.start <= d <= due.end]
    if rejected:
        return Outcome(due, State.missed, reason="rejected", detail=rejected[0])
    return Outcome(due, State.missed, reason="not_visited")


# --- the month's figures ----------------------------------------------------------------------


@dataclass(frozen=True)
class VisitRate:
    """Visited ÷ due for one region and month. `due` counts visits whose time is up or that
    were made (pending ones are apart). `missed` names each one not made, for a village only
    (a township's or county's are its villages': 10⁵ elders' misses are not listed thrice);
    `missed_count` is every region's."""

    region_id: int
    month: str
    due: int
    visited: int
    pending: int
    elders_due: int
    elders_all_visited: int
    missed: tuple[Outcome, ...]
    missed_count: int = 0

    @property
    def rate(self) -> float | None:
        return self.visited / self.due if self.due else None


def visit_rates(
    outcomes: Iterable[Outcome],
    village_of: Mapping[int, int],
    parents: Mapping[int, int | None],
    month: str,
) -> list[VisitRate]:
    """The rate per village, township and county: each outcome counts in its elder's village
    (`village_of`: elder → village) and every region above it (`parents`: region → parent)."""
    # Counted per village first, then each village's sums added to the regions above it.
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    missed: dict[int, list[Outcome]] = defaultdict(list)
    elders_due: dict[int, set[int]] = defaultdict(set)
    elders_short: dict[int, set[int]] = defaultdict(set)
    for o in outcomes:
        village = village_of[o.due.elder_id]
        c = counts[village]
        if o.state is State.pending:
            c[2] += 1
            continue
        c[0] += 1
        elders_due[village].add(o.due.elder_id)
        if o.state is State.visited:
            c[1] += 1
        else:
            missed[village].append(o)
            elders_short[village].add(o.due.elder_id)
    for village in list(counts):
        up = parents.get(village)
        depth = 0
        while up is not None and depth < 3:
            total = counts[up]
            for k in range(3):
                total[k] += counts[village][k]
            elders_due[up] |= elders_due[village]
            elders_short[up] |= elders_short[village]
            up, depth = parents.get(up), depth + 1
    return [
        VisitRate(
            region_id=region,
            month=month,
            due=c[0],
            visited=c[1],
            pending=c[2],
            elders_due=len(elders_due[region]),
            elders_all_visited=len(elders_due[region] - elders_short[region]),
            missed=tuple(sorted(missed[region], key=lambda o: (o.due.elder_id, o.due.start))),
            missed_count=c[0] - c[1],
        )
        for region, c in sorted(counts.items())
    ]


# --- one elder now (reminders, the overdue tab, the elder's page) ---------------------------


@dataclass(frozen=True)
class ElderStatus:
    elder_id: int
    tier: str
    every: Frequency
    period: Period | None  # the current period (None: no periodic visits)
    visited_this_period: date | None
    last_visit: date | None
    overdue_since: date | None  # the first day after the last period missed, if not visited since
    major_change_due_by: datetime | None  # an open major change's deadline (not yet visited)
    major_change_overdue: bool

    @property
    def overdue(self) -> bool:
        return self.overdue_since is not None or self.major_change_overdue

    @property
    def due_by(self) -> date | None:
        """The last day of the current period if it still needs its visit."""
        if self.period is None or self.visited_this_period is not None:
            return None
        return self.period.end


def elder_status(
    elder: ElderFacts,
    plan: VisitPlan,
    visits: Sequence[VisitFact],
    changes: Sequence[MajorChangeFact],
    now: datetime,
    timezone: str,
) -> ElderStatus:
    """Where one elder's visits stand now. Overdue: the period before the current one had no
    counted visit and none has been made since (an elder never visited is overdue once a whole
    period has passed); a major change is overdue past its deadline with no visit since the
    mark. `visits` and `changes` are the elder's own (any order)."""
    today = local_date(now, timezone)
    tier = plan.tier_of(elder.categories)
    every = plan.every(tier)
    counted = sorted(
        (v for v in visits if v.counted and v.elder_id == elder.elder_id),
        key=lambda v: v.visited_at,
    )
    dates = [v.local_date for v in counted]
    last = dates[-1] if dates else None
    period = period_of(every, today)
    this = next((d for d in dates if period is not None and d in period), None)
    overdue_since: date | None = None
    if period is not None and this is None:
        previous = period_of(every, period.start - timedelta(days=1))
        assert previous is not None
        if last is None or last < previous.start:
            overdue_since = previous.end + timedelta(days=1)
    open_change: datetime | None = None
    change_overdue = False
    for change in sorted(
        (c for c in changes if c.elder_id == elder.elder_id), key=lambda c: c.marked_at
    ):
        if any(v.visited_at >= change.marked_at for v in counted):
            continue
        open_change = change.due_by if open_change is None else min(open_change, change.due_by)
        change_overdue = change_overdue or now > change.due_by
    return ElderStatus(
        elder_id=elder.elder_id,
        tier=tier,
        every=every,
        period=period,
        visited_this_period=this,
        last_visit=last,
        overdue_since=overdue_since,
        major_change_due_by=open_change,
        major_change_overdue=change_overdue,
    )
