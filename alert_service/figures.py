"""Compliance figures for the 15-minute rule, per township or county and month. Pure: the
facts about each alert come in, the figures go out; `now` and the time zone are arguments.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

URGENT = (1, 2)  # P1 emergency and P2 urgent run the 15-minute clock


@dataclass(frozen=True)
class AlertFacts:
    """What the figures need to know about one alert."""

    township_id: int | None
    county_id: int | None
    priority: int
    raised_at: datetime
    # When the 15-minute clock started (raised_at, or when device trouble became urgent).
    clock_started_at: datetime | None
    respond_by: datetime | None
    accepted_at: datetime | None
    on_scene_at: datetime | None
    resolved_at: datetime | None
    breached: bool
    outcome: str | None
    device_kind: str | None


@dataclass(frozen=True)
class MonthFigures:
    region_id: int
    month: str  # YYYY-MM in the deployment's time zone
    alerts: int  # every alert raised in the region that month, any priority
    urgent: int  # P1 and P2: the ones the 15-minute rule applies to
    decided: int  # urgent alerts whose result is known (on scene, closed, or past the deadline)
    on_scene_in_time: int
    on_scene_in_time_share: float | None  # of the decided ones; None when there are none
    accept_p50_s: float | None  # clock start → first accept
    accept_p90_s: float | None
    on_scene_p50_s: float | None  # clock start → someone at the elder's side
    on_scene_p90_s: float | None
    breaches: int
    false_alarms_by_device_kind: dict[str, int] = field(default_factory=dict)


def month_of(when: datetime, timezone: str) -> str:
    return when.astimezone(ZoneInfo(timezone)).strftime("%Y-%m")


def month_bounds(month: str, timezone: str) -> tuple[datetime, datetime]:
    """The first instant of a month (YYYY-MM, local) and of the next one, as aware datetimes."""
    year, number = (int(part) for part in month.split("-"))
    zone = ZoneInfo(timezone)
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start, end


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile: a value that really occurred, as auditors expect."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def _is_breach(fact: AlertFacts, now: datetime) -> bool:
    if fact.respond_by is None:
        return False
    if fact.breached:
        return True
    if fact.on_scene_at is not None:
        return fact.on_scene_at > fact.respond_by
    closed_in_time = fact.resolved_at is not None and fact.resolved_at <= fact.respond_by
    return not closed_in_time and now >= fact.respond_by


def _is_decided(fact: AlertFacts, now: datetime) -> bool:
    assert fact.respond_by is not None
    return fact.on_scene_at is not None or fact.resolved_at is not None or now >= fact.respond_by


@dataclass
class _Tally:
    alerts: int = 0
    urgent: int = 0
    decided: int = 0
    met: int = 0
    breaches: int = 0
    to_accept: list[float] = field(default_factory=list)
    to_on_scene: list[float] = field(default_factory=list)
    false_alarms: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def compliance_figures(
    facts: Iterable[AlertFacts], timezone: str, now: datetime
) -> list[MonthFigures]:
    """Per region (each alert counts for its township and its county) and month raised."""
    tallies: dict[tuple[int, str], _Tally] = defaultdict(_Tally)
    for fact in facts:
        month = month_of(fact.raised_at, timezone)
        regions = {r for r in (fact.township_id, fact.county_id) if r is not None}
        for region_id in regions:
            tally = tallies[(region_id, month)]
            tally.alerts += 1
            if fact.outcome == "false_alarm":
                tally.false_alarms[fact.device_kind or "none"] += 1
            if fact.priority not in URGENT or fact.respond_by is None:
                continue
            tally.urgent += 1
            if not _is_decided(fact, now):
                continue
            tally.decided += 1
            started = fact.clock_started_at or fact.raised_at
            if fact.on_scene_at is not None and fact.on_scene_at <= fact.respond_by:
                tally.met += 1
            if _is_breach(fact, now):
                tally.breaches += 1
            if fact.accepted_at is not None:
                tally.to_accept.append(_seconds(fact.accepted_at - started))
            if fact.on_scene_at is not None:
                tally.to_on_scene.append(_seconds(fact.on_scene_at - started))
    return [
        MonthFigures(
            region_id=region_id,
            month=month,
            alerts=t.alerts,
            urgent=t.urgent,
            decided=t.decided,
            on_scene_in_time=t.met,
            on_scene_in_time_share=t.met / t.decided if t.decided else None,
            accept_p50_s=percentile(t.to_accept, 0.5),
            accept_p90_s=percentile(t.to_accept, 0.9),
            on_scene_p50_s=percentile(t.to_on_scene, 0.5),
            on_scene_p90_s=percentile(t.to_on_scene, 0.9),
            breaches=t.breaches,
            false_alarms_by_device_kind=dict(sorted(t.false_alarms.items())),
        )
        for (region_id, month), t in sorted(tallies.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def _seconds(delta: timedelta) -> float:
    return max(0.0, delta.total_seconds())
