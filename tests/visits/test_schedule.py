"""The pure visit schedule (visits/schedule.py), table-driven on fake-clock times: which tier,
which period, what is due in a month, whether each was made, where an elder stands now."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from visits import schedule
from visits.schedule import (
    DueKind,
    ElderFacts,
    Frequency,
    MajorChangeFact,
    Period,
    State,
    VisitFact,
    VisitPlan,
)

TZ = "Asia/Shanghai"


def at(day: str, hour: int = 10) -> datetime:
    """A Shanghai local time as UTC (Shanghai is UTC+8 all year)."""
    d = date.fromisoformat(day)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC) - timedelta(hours=8)


def visit(
    elder: int, day: str, hour: int = 10, *, counted: bool = True, why: str | None = None
) -> VisitFact:
    when = at(day, hour)
    return VisitFact(elder, when, schedule.local_date(when, TZ), counted, why)


@pytest.mark.parametrize(
    ("categories", "tier"),
    [
        ({"extreme_poverty"}, "high"),
        ({"disabled"}, "high"),
        ({"dementia"}, "high"),
        ({"severe_disability"}, "high"),
        ({"living_alone", "advanced_age"}, "high"),
        ({"living_alone"}, "key"),
        ({"advanced_age"}, "key"),
        ({"empty_nest"}, "key"),
        ({"left_behind"}, "key"),
        ({"low_income"}, "key"),
        ({"semi_disabled"}, "key"),
        ({"family_planning_special"}, "key"),
        ({"semi_disabled", "low_income"}, "key"),
        (set(), "other"),
    ],
)
def test_the_default_tiers(categories: set[str], tier: str) -> None:
    assert VisitPlan().tier_of(categories) == tier


def test_the_default_frequencies_and_a_region_override() -> None:
    plan = VisitPlan()
    assert [plan.every(t) for t in schedule.TIERS] == ["week", "month", "quarter"]
    # The county makes key quarterly and major changes 12 h, the township key weekly again, the
    # village puts only 留守 in high. Nearest first, as the region chain is.
    village = {"high_categories": ["left_behind"]}
    township = {"key_every": "week"}
    county = {"key_every": "quarter", "major_change_hours": 12}
    merged = schedule.plan_for([village, township, county])
    assert merged.key_every is Frequency.week
    assert merged.major_change_hours == 12
    assert merged.tier_of({"left_behind"}) == "high"
    assert merged.tier_of({"extreme_poverty"}) == "other"  # the village replaced the list


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"key_every": "fortnight"}, "key_every"),
        ({"high_categories": ["orphan"]}, "orphan"),
        ({"major_change_hours": 0}, "major_change_hours"),
        ({"major_change_hours": True}, "major_change_hours"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_override_names_its_key(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule.check_override(override)


@pytest.mark.parametrize(
    ("every", "day", "period"),
    [
        (Frequency.week, "2026-11-01", ("2026-11-01", "2026-11-07")),
        (Frequency.week, "2026-11-07", ("2026-11-01", "2026-11-07")),
        (Frequency.week, "2026-11-08", ("2026-11-08", "2026-11-14")),
        (Frequency.week, "2026-11-21", ("2026-11-15", "2026-11-21")),
        (Frequency.week, "2026-11-30", ("2026-11-22", "2026-11-30")),
        (Frequency.week, "2026-02-28", ("2026-02-22", "2026-02-28")),
        (Frequency.week, "2026-12-31", ("2026-12-22", "2026-12-31")),
        (Frequency.month, "2026-02-14", ("2026-02-01", "2026-02-28")),
        (Frequency.month, "2028-02-14", ("2028-02-01", "2028-02-29")),
        (Frequency.quarter, "2026-11-10", ("2026-10-01", "2026-12-31")),
        (Frequency.quarter, "2026-01-01", ("2026-01-01", "2026-03-31")),
    ],
)
def test_periods(every: Frequency, day: str, period: tuple[str, str]) -> None:
    assert schedule.period_of(every, date.fromisoformat(day)) == Period(
        date.fromisoformat(period[0]), date.fromisoformat(period[1])
    )


@pytest.mark.parametrize(
    ("every", "month", "count"),
    [
        (Frequency.week, (2026, 11), 4),
        (Frequency.month, (2026, 11), 1),
        (Frequency.quarter, (2026, 11), 0),
        (Frequency.quarter, (2026, 12), 1),
        (Frequency.none, (2026, 12), 0),
    ],
)
def test_periods_ending_in_a_month(every: Frequency, month: tuple[int, int], count: int) -> None:
    assert len(schedule.periods_ending_in(every, *month)) == count


@pytest.mark.parametrize("bad", ["2026-13", "2026-0", "26-11", "2026/11", "", "2026-1a"])
def test_a_bad_month(bad: str) -> None:
    with pytest.raises(ValueError):
        schedule.parse_month(bad)


HIGH = ElderFacts(1, 100, frozenset({"dementia"}), owner_id=7)
KEY = ElderFacts(2, 100, frozenset({"living_alone"}), owner_id=7)
OTHER = ElderFacts(3, 100, frozenset(), owner_id=7)
ORPHAN = ElderFacts(4, 101, frozenset({"empty_nest"}), owner_id=None)
LEFT = ElderFacts(5, 100, frozenset({"living_alone"}), owner_id=7, archived_on=date(2026, 11, 20))


def _outcomes(
    elders: list[ElderFacts],
    visits: list[VisitFact],
    now: datetime,
    changes: list[MajorChangeFact] = [],  # noqa: B006 (read only)
    month: str = "2026-11",
) -> list[tuple[int, str, str, str, str | None]]:
    dues = schedule.month_dues(elders, {}, month, changes, TZ)
    owners = {e.elder_id: e.owner_id for e in elders}
    return [
        (o.due.elder_id, o.due.kind.value, o.due.start.isoformat(), o.state.value, o.reason)
        for o in schedule.assess(dues, visits, owners, now, TZ)
    ]


@pytest.mark.parametrize(
    ("visits", "now", "expected"),
    [
        # a weekly elder visited in weeks 1 and 3 only, month over
        (
            [visit(1, "2026-11-03"), visit(1, "2026-11-16")],
            at("2026-12-01"),
            [
                (1, "periodic", "2026-11-01", "visited", None),
                (1, "periodic", "2026-11-08", "missed", "not_visited"),
                (1, "periodic", "2026-11-15", "visited", None),
                (1, "periodic", "2026-11-22", "missed", "not_visited"),
            ],
        ),
        # mid-month: the weeks not over are pending, an over one missed, a made one visited
        (
            [visit(1, "2026-11-16")],
            at("2026-11-16", 12),
            [
                (1, "periodic", "2026-11-01", "missed", "not_visited"),
                (1, "periodic", "2026-11-08", "missed", "not_visited"),
                (1, "periodic", "2026-11-15", "visited", None),
                (1, "periodic", "2026-11-22", "pending", None),
            ],
        ),
        # the last day of a week counts in it, the local day decides (23:30 local is UTC 15:30)
        (
            [
                visit(1, "2026-11-07", 23),
                visit(1, "2026-11-14", 0),
                visit(1, "2026-11-21"),
                visit(1, "2026-11-30", 23),
            ],
            at("2026-12-01"),
            [
                (1, "periodic", "2026-11-01", "visited", None),
                (1, "periodic", "2026-11-08", "visited", None),
                (1, "periodic", "2026-11-15", "visited", None),
                (1, "periodic", "2026-11-22", "visited", None),
            ],
        ),
        # a rejected report does not count and is the reason; a later visit is a later week's
        (
            [
                visit(1, "2026-11-02", counted=False, why="not_assigned"),
                visit(1, "2026-11-09"),
                visit(1, "2026-11-15"),
                visit(1, "2026-11-22"),
            ],
            at("2026-12-01"),
            [
                (1, "periodic", "2026-11-01", "missed", "rejected"),
                (1, "periodic", "2026-11-08", "visited", None),
                (1, "periodic", "2026-11-15", "visited", None),
                (1, "periodic", "2026-11-22", "visited", None),
            ],
        ),
    ],
)
def test_a_weekly_elders_month(
    visits: list[VisitFact], now: datetime, expected: list[tuple[object, ...]]
) -> None:
    assert _outcomes([HIGH], visits, now) == expected


def test_a_rejected_report_is_the_reason_when_nothing_came_later() -> None:
    visits = [visit(2, "2026-11-05", counted=False, why="same_day")]
    assert _outcomes([KEY], visits, at("2026-12-01")) == [
        (2, "periodic", "2026-11-01", "missed", "rejected")
    ]


def test_monthly_quarterly_no_aide_and_archived() -> None:
    elders = [KEY, OTHER, ORPHAN, LEFT]
    visits = [visit(2, "2026-11-30")]
    # November: the quarterly elder is not due; 5 left on the 20th, before the month's end
    assert _outcomes(elders, visits, at("2026-12-01")) == [
        (2, "periodic", "2026-11-01", "visited", None),
        (4, "periodic", "2026-11-01", "missed", "no_aide"),
    ]
    # December: the quarter is due; a visit in October counts for it
    december = _outcomes([OTHER], [visit(3, "2026-10-02")], at("2027-01-01"), month="2026-12")
    assert december == [(3, "periodic", "2026-10-01", "visited", None)]


@pytest.mark.parametrize(
    ("visits", "now", "state", "reason"),
    [
        ([visit(2, "2026-11-10", 20)], at("2026-11-11", 12), "visited", None),  # within 24 h
        ([visit(2, "2026-11-10", 8)], at("2026-11-12"), "missed", "not_visited"),  # before the mark
        ([], at("2026-11-11", 9), "pending", None),  # deadline not passed
        ([visit(2, "2026-11-12")], at("2026-11-13"), "missed", "late"),  # after the deadline
    ],
)
def test_a_major_change_within_24_hours(
    visits: list[VisitFact], now: datetime, state: str, reason: str | None
) -> None:
    change = MajorChangeFact(2, at("2026-11-10", 10), at("2026-11-11", 10))
    rows = [r for r in _outcomes([KEY], visits, now, [change]) if r[1] == "major_change"]
    assert rows == [(2, "major_change", "2026-11-10", state, reason)]


def test_rates_roll_up_village_township_county() -> None:
    elders = [HIGH, KEY, ORPHAN]
    visits = [visit(1, "2026-11-03"), visit(1, "2026-11-10"), visit(2, "2026-11-20")]
    dues = schedule.month_dues(elders, {}, "2026-11", [], TZ)
    outcomes = schedule.assess(dues, visits, {1: 7, 2: 7, 4: None}, at("2026-12-01"), TZ)
    rates = schedule.visit_rates(
        outcomes, {1: 100, 2: 100, 4: 101}, {100: 10, 101: 10, 10: 1, 1: None}, "2026-11"
    )
    table = {r.region_id: (r.visited, r.due, r.elders_all_visited, r.elders_due) for r in rates}
    assert table == {100: (3, 5, 1, 2), 101: (0, 1, 0, 1), 10: (3, 6, 1, 3), 1: (3, 6, 1, 3)}
    county = next(r for r in rates if r.region_id == 1)
    assert county.rate == pytest.approx(0.5)
    assert (county.missed_count, county.missed) == (3, ())  # listed by village
    by_village = {r.region_id: [(o.due.elder_id, o.reason) for o in r.missed] for r in rates}
    assert by_village[100] == [(1, "not_visited"), (1, "not_visited")]
    assert by_village[101] == [(4, "no_aide")]


@pytest.mark.parametrize(
    ("visits", "now", "visited", "overdue_since", "due_by"),
    [
        ([visit(2, "2026-10-20")], at("2026-11-10"), None, None, "2026-11-30"),
        ([visit(2, "2026-11-02")], at("2026-11-10"), "2026-11-02", None, None),
        ([visit(2, "2026-09-20")], at("2026-11-10"), None, "2026-11-01", "2026-11-30"),
        ([], at("2026-11-10"), None, "2026-11-01", "2026-11-30"),
    ],
)
def test_one_elder_now(
    visits: list[VisitFact],
    now: datetime,
    visited: str | None,
    overdue_since: str | None,
    due_by: str | None,
) -> None:
    status = schedule.elder_status(KEY, VisitPlan(), visits, [], now, TZ)
    assert status.tier == "key" and status.every is Frequency.month
    assert (status.visited_this_period and status.visited_this_period.isoformat()) == visited
    assert (status.overdue_since and status.overdue_since.isoformat()) == overdue_since
    assert (status.due_by and status.due_by.isoformat()) == due_by
    assert status.overdue is (overdue_since is not None)


def test_an_open_major_change_is_overdue_after_its_deadline() -> None:
    change = MajorChangeFact(2, at("2026-11-10", 10), at("2026-11-11", 10))
    recent = [visit(2, "2026-11-05")]
    before = schedule.elder_status(KEY, VisitPlan(), recent, [change], at("2026-11-11", 9), TZ)
    after = schedule.elder_status(KEY, VisitPlan(), recent, [change], at("2026-11-11", 11), TZ)
    made = schedule.elder_status(
        KEY, VisitPlan(), [*recent, visit(2, "2026-11-10", 15)], [change], at("2026-11-11", 11), TZ
    )
    assert (before.major_change_due_by, before.overdue) == (change.due_by, False)
    assert (after.major_change_due_by, after.overdue) == (change.due_by, True)
    assert (made.major_change_due_by, made.overdue) == (None, False)
    assert DueKind.major_change.value == "major_change" and State.pending.value == "pending"
