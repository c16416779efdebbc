"""The weekly digest's pure part (visits/digest.py) on a fake clock: which ISO week, when it is
due, who is due this week, and a text that fits two SMS segments (issue 18 item 4)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dispatcher import aliyun_templates
from visits import digest, schedule
from visits.digest import DigestLine
from visits.schedule import ElderFacts, Frequency, MajorChangeFact, VisitFact, VisitPlan

TZ = "Asia/Shanghai"


def at(day: str, hour: int = 10) -> datetime:
    """A Shanghai time as UTC."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC) - timedelta(hours=8)


def seen(elder: int, day: str) -> VisitFact:
    return VisitFact(elder, at(day), date.fromisoformat(day))


HIGH = ElderFacts(1, 100, frozenset({"dementia"}))  # weekly
KEY = ElderFacts(2, 100, frozenset({"living_alone"}))  # monthly


@pytest.mark.parametrize(
    ("now", "week", "sunday"),
    [
        (at("2026-11-30", 8), "2026-W49", "2026-12-06"),  # Monday
        (at("2026-12-06", 23), "2026-W49", "2026-12-06"),  # Sunday night, local
        (at("2026-12-07", 0), "2026-W50", "2026-12-13"),  # 00:00 Monday local is Sunday UTC
        (at("2027-01-01"), "2026-W53", "2027-01-03"),  # the ISO year, not the calendar's
    ],
)
def test_the_local_iso_week(now: datetime, week: str, sunday: str) -> None:
    assert digest.iso_week(now, TZ) == week
    assert digest.week_end(now, TZ) == date.fromisoformat(sunday)


@pytest.mark.parametrize(
    ("now", "weekday", "hour", "due"),
    [
        (at("2026-11-30", 7), 1, 8, False),  # Monday 07:00, before 08:00
        (at("2026-11-30", 8), 1, 8, True),
        (at("2026-12-03", 15), 1, 8, True),  # missed Monday (the role was down): later that week
        (at("2026-12-03", 15), 5, 8, False),  # set to Friday
        (at("2026-12-06", 23), 7, 20, True),
    ],
)
def test_when_the_weeks_digest_is_due(now: datetime, weekday: int, hour: int, due: bool) -> None:
    assert digest.is_due(now, TZ, weekday=weekday, hour=hour) is due


def status(
    elder: ElderFacts,
    visits: list[VisitFact],
    now: datetime,
    changes: list[MajorChangeFact] | None = None,
) -> schedule.ElderStatus:
    return schedule.elder_status(elder, VisitPlan(), visits, changes or [], now, TZ)


MONDAY = at("2026-11-30", 8)  # month-aligned week 22–30 of November ends on Monday itself


@pytest.mark.parametrize(
    ("elder", "visits", "now", "due"),
    [
        # weekly, visited in this period's week: not due
        (HIGH, [seen(1, "2026-11-29")], MONDAY, False),
        # weekly, not visited this week (22–30 Nov) but the last week visited: due
        (HIGH, [seen(1, "2026-11-20")], MONDAY, True),
        # monthly, visited this month: not due
        (KEY, [seen(2, "2026-11-03")], MONDAY, False),
        # monthly, last visited in November, now 2 December: the month ends after Sunday
        (KEY, [seen(2, "2026-11-03")], at("2026-12-02"), False),
        # monthly, the month ends this week (Monday 28 December, Thursday 31)
        (KEY, [seen(2, "2026-11-03")], at("2026-12-28", 8), True),
        # never visited: overdue, so due
        (KEY, [], at("2026-12-02"), True),
    ],
)
def test_who_is_due_this_week(
    elder: ElderFacts, visits: list[VisitFact], now: datetime, due: bool
) -> None:
    s = status(elder, visits, now)
    assert digest.due_this_week(s, digest.week_end(now, TZ)) is due


def test_an_open_major_change_is_due_this_week() -> None:
    now = at("2026-12-02")
    change = MajorChangeFact(2, now - timedelta(hours=2), now + timedelta(hours=22))
    s = status(KEY, [seen(2, "2026-12-01")], now, [change])
    assert digest.due_this_week(s, digest.week_end(now, TZ))


def line(
    code: str, name: str = "张桂英", overdue: bool = False, due: str = "2026-12-06"
) -> DigestLine:
    return DigestLine(code, name, overdue, date.fromisoformat(due))


def test_the_text_lists_overdue_first_then_by_due_date_with_masked_names() -> None:
    text = digest.digest_text(
        [line("E0003", due="2026-12-31"), line("E0002", "李秀兰"), line("E0009", "欧阳娜娜", True)]
    )
    assert text == "【安心】本周待探访：E0009 欧阳XX，E0002 李XX，E0003 张XX 共3位"


@pytest.mark.parametrize("count", [1, 8, 9, 40, 400])
def test_the_text_fits_two_segments_and_always_says_how_many(count: int) -> None:
    lines = [line(f"E{i:04d}") for i in range(count)]
    text = digest.digest_text(lines)
    assert len(text) <= digest.MAX_CHARS
    assert text.endswith(f"共{count}位")
    listed = text.count("E0")
    assert listed >= 1 and ("等" in text) is (listed < count)
    # what it lists is the first ones, in order
    assert "E0000 张XX" in text


def test_english_for_an_aide_who_reads_english() -> None:
    text = digest.digest_text([line("E0001", "Li Lei")], "en")
    assert text == "[Anxin] Visits due this week: E0001 Li XX (1 in all)"


def test_the_key_names_aide_and_week() -> None:
    assert digest.digest_key(7, "2026-W49") == "visit-digest:7:2026-W49"
    assert Frequency.week.value == "week"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_the_digest_is_a_registered_aliyun_template(lang: str) -> None:
    few = digest.digest_text([line("E0001"), line("E0002", "李秀兰")], lang)
    message = aliyun_templates.to_template(few)
    assert message.template.key == "ANXIN_VISIT_DIGEST" + ("_EN" if lang == "en" else "")
    assert message.shortened == () and message.params["count"] == "2"
    # A long list: the variable is cut to Aliyun's 35 characters, the count stays whole.
    many = aliyun_templates.to_template(digest.digest_text([line(f"E{i:04d}") for i in range(40)]))
    assert many.shortened == ("list",) and many.params["count"] == "40"
    assert len(many.params["list"]) <= aliyun_templates.MAX_VARIABLE_CHARS
