"""The pure rules with `now` passed in: events → alerts, and the escalation ladder step by step."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alert_service import regions, rules
from alert_service.rules import (
    AskResponder,
    CancelTimers,
    MarkAtRisk,
    MarkBreached,
    RaiseAlert,
    RemindTaker,
    RequestCancel,
    StartTimer,
    TimeOutAttempt,
)
from anxin.models import Region
from tests import builders
from tests.support.ladder_sim import (
    T0,
    Log,
    Reply,
    at,
    drive,
    new_alert,
    ranking,
    respond,
    settle,
)

SHANGHAI = "Asia/Shanghai"


def local(hh: int, mm: int, ss: int = 0, day: int = 23) -> datetime:
    """A wall-clock time in Asia/Shanghai (UTC+8), as a UTC datetime."""
    return datetime(2026, 11, day, hh, mm, ss, tzinfo=UTC) - timedelta(hours=8)


ALONE = rules.ElderProfile(living_alone=True)
WANDERS = rules.ElderProfile(wanders=True)
PLAIN = rules.ElderProfile()

# --- events → alerts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "data", "profile", "now", "kwargs", "expected"),
    [
        ("sos", {}, PLAIN, local(10, 0), {}, [RaiseAlert("sos", 1)]),
        ("fall", {}, PLAIN, local(10, 0), {}, [RaiseAlert("fall", 1, call_120=True)]),
        ("smoke", {}, PLAIN, local(10, 0), {}, [RaiseAlert("smoke", 1, call_120=True)]),
        ("gas", {}, PLAIN, local(10, 0), {}, [RaiseAlert("gas", 1, call_120=True)]),
        ("inactivity", {}, PLAIN, local(10, 0), {}, [RaiseAlert("inactivity", 2)]),
        ("water_leak", {}, PLAIN, local(10, 0), {}, [RaiseAlert("water_leak", 2)]),
        ("low_battery", {"battery": 9}, PLAIN, local(10, 0), {}, [RaiseAlert("low_battery", 3)]),
        ("tamper", {}, PLAIN, local(10, 0), {}, [RaiseAlert("tamper", 3)]),
        ("test", {}, PLAIN, local(10, 0), {}, []),
        ("sos_cancel", {}, PLAIN, local(10, 0), {}, [RequestCancel("sos")]),
        # Bed exit at night starts the 20-minute wait; by day it means nothing.
        (
            "bed_exit",
            {"bed": "bed-1"},
            PLAIN,
            local(23, 10),
            {},
            [StartTimer("bed_exit", local(23, 30))],
        ),
        ("bed_exit", {}, PLAIN, local(22, 0), {}, [StartTimer("bed_exit", local(22, 20))]),
        ("bed_exit", {}, PLAIN, local(5, 59), {}, [StartTimer("bed_exit", local(6, 19))]),
        ("bed_exit", {}, PLAIN, local(6, 0), {}, []),
        ("bed_exit", {}, PLAIN, local(21, 59), {}, []),
        ("bed_exit", {}, PLAIN, local(14, 0), {}, []),
        # Per-elder night window: this elder goes to bed at 20:30 and gets up at 07:00.
        (
            "bed_exit",
            {},
            rules.ElderProfile(night_start="20:30", night_end="07:00"),
            local(21, 0),
            {},
            [StartTimer("bed_exit", local(21, 20))],
        ),
        (
            "bed_exit",
            {},
            rules.ElderProfile(night_start="20:30", night_end="07:00"),
            local(6, 30),
            {},
            [StartTimer("bed_exit", local(6, 50))],
        ),
        ("bed_return", {}, PLAIN, local(23, 25), {}, [CancelTimers("bed_exit")]),
        # Door open at night: urgent only for an elder at risk of wandering.
        ("door_open", {}, WANDERS, local(2, 0), {}, [RaiseAlert("door_open", 2)]),
        ("door_open", {}, PLAIN, local(2, 0), {}, []),
        ("door_open", {}, WANDERS, local(15, 0), {}, []),
        # Power: device trouble, and urgent after 4 h for an elder living alone.
        (
            "power_lost",
            {},
            ALONE,
            local(10, 0),
            {},
            [RaiseAlert("power_lost", 3), StartTimer("power_lost", local(14, 0))],
        ),
        ("power_lost", {}, PLAIN, local(10, 0), {}, [RaiseAlert("power_lost", 3)]),
        ("power_restored", {}, ALONE, local(11, 0), {}, [CancelTimers("power_lost")]),
        # Offline: a silent SOS button or hub of an elder alone needs a welfare check in 2 h.
        (
            "offline",
            {},
            ALONE,
            local(10, 0),
            {"device_kind": "sos_button"},
            [RaiseAlert("offline", 3, respond_within=timedelta(hours=2))],
        ),
        (
            "offline",
            {},
            ALONE,
            local(10, 0),
            {"device_kind": "hub"},
            [RaiseAlert("offline", 3, respond_within=timedelta(hours=2))],
        ),
        (
            "offline",
            {},
            ALONE,
            local(10, 0),
            {"device_kind": "bed_sensor"},
            [RaiseAlert("offline", 3)],
        ),
        (
            "offline",
            {},
            PLAIN,
            local(10, 0),
            {"device_kind": "sos_button"},
            [RaiseAlert("offline", 3)],
        ),
    ],
)
def test_an_event_means_what_the_rules_say(
    event: str,
    data: dict[str, Any],
    profile: rules.ElderProfile,
    now: datetime,
    kwargs: dict[str, Any],
    expected: list[rules.Decision],
) -> None:
    assert rules.decide(event, data, profile, now, **kwargs) == expected


@pytest.mark.parametrize(
    ("reading", "previous", "thresholds", "expected"),
    [
        ({"heart_rate": 72, "resp_rate": 16}, "normal", {}, []),
        # Far out of range is an emergency on one reading.
        ({"heart_rate": 38}, "normal", {}, [RaiseAlert("vitals", 1)]),
        ({"heart_rate": 160}, "normal", {}, [RaiseAlert("vitals", 1)]),
        ({"resp_rate": 5}, "normal", {}, [RaiseAlert("vitals", 1)]),
        # Out of range once waits for the next reading; twice in a row is urgent.
        ({"heart_rate": 46}, "normal", {}, []),
        ({"heart_rate": 46}, "out", {}, [RaiseAlert("vitals", 2)]),
        ({"resp_rate": 28}, "far", {}, [RaiseAlert("vitals", 2)]),
        ({"heart_rate": 72}, "out", {}, []),
        # Damaged fields are ignored, never a crash.
        ({"heart_rate": "fast", "resp_rate": True}, "out", {}, []),
        # Per-elder thresholds: this elder's normal heart rate is low (on beta blockers).
        ({"heart_rate": 46}, "out", {"heart_rate_low": 42}, []),
        ({"heart_rate": 110}, "out", {"heart_rate_high": 100}, [RaiseAlert("vitals", 2)]),
        ({"heart_rate": 130}, "normal", {"heart_rate_far_high": 125}, [RaiseAlert("vitals", 1)]),
    ],
)
def test_vital_signs(
    reading: dict[str, Any], previous: str, thresholds: dict[str, float], expected: list[Any]
) -> None:
    profile = rules.ElderProfile(thresholds=thresholds)
    assert rules.decide("vitals", reading, profile, T0, previous_vitals=previous) == expected


def test_rule_timers_raise_urgent_alerts_when_they_fire() -> None:
    assert rules.timer_alert("bed_exit") == RaiseAlert("bed_exit", 2)
    assert rules.timer_alert("power_lost") == RaiseAlert("power_lost", 2)


@pytest.mark.parametrize(
    ("cancel_after", "allowed"),
    [(timedelta(seconds=30), True), (timedelta(minutes=2), True), (timedelta(seconds=121), False)],
)
def test_sos_cancel_counts_only_within_two_minutes(cancel_after: timedelta, allowed: bool) -> None:
    assert rules.may_cancel(T0, T0 + cancel_after) is allowed


def test_the_taker_hears_of_repeat_presses_in_windows_that_double() -> None:
    def window(minutes: float) -> int:
        return rules.pressed_again_window(T0, T0 + timedelta(minutes=minutes))

    assert [window(m) for m in (0, 1.9, 2, 3.9, 4, 7.9, 8, 15.9, 16)] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    # A button stuck for a day: at most one SMS per window.
    assert len({window(m) for m in range(0, 24 * 60)}) == 11


# --- the 15-minute clock --------------------------------------------------------------------

LADDER = builders.ladder()


def test_at_14_59_the_clock_waits_and_at_15_00_it_is_breached() -> None:
    # Taken at T0+1 by an aide 4 minutes away who never reports arrival.
    state = respond(new_alert(ranking(4)), 101, "accept", at(1))
    state = replace(state, reminder_sent=True, at_risk=True)
    waiting = rules.plan(state, LADDER, at(14, 59))
    assert waiting.actions == ()
    assert waiting.next_check_at == at(15)
    breached = rules.plan(state, LADDER, at(15))
    assert breached.actions == (
        MarkBreached(),
        AskResponder(301, "county_centre", "breached"),
    )
    # On scene at 14:59 meets the rule: nothing is left to do.
    met = respond(state, 101, "on_scene", at(14, 59))
    assert rules.plan(met, LADDER, at(15)) == rules.Plan((), None)


def test_arriving_after_the_deadline_is_recorded_as_a_breach() -> None:
    state = respond(new_alert(ranking(4)), 101, "accept", at(1))
    late = respond(state, 101, "on_scene", at(16))
    assert rules.plan(late, LADDER, at(16)).actions == (MarkBreached(arrived_late=True),)


def test_p3_without_a_deadline_has_no_ladder() -> None:
    state = replace(new_alert(ranking(4)), priority=3, respond_by=None)
    assert rules.plan(state, LADDER, at(30)) == rules.Plan((), None)


def test_resolved_alert_has_no_ladder() -> None:
    state = replace(new_alert(ranking(4)), status="resolved")
    assert rules.plan(state, LADDER, at(3)) == rules.Plan((), None)


# --- the escalation ladder, table-driven ----------------------------------------------------

NEAR = ranking(4, 5, 6)  # three aides who can all make it; centre 12 min; county 25 min


def ask(responder_id: int, role: str, reason: str) -> AskResponder:
    return AskResponder(responder_id, role, reason)


AIDE, CENTRE, COUNTY = "aide", "township_centre", "county_centre"
m = timedelta(minutes=1)
s = timedelta(seconds=1)

# Nobody answers on the NEAR ranking: three aides, the township centre, the county.
SILENT_TO_COUNTY: Log = [
    (0 * m, ask(101, AIDE, "nearest")),
    (3 * m, TimeOutAttempt(101)),
    (3 * m, ask(102, AIDE, "next_aide")),
    (6 * m, TimeOutAttempt(102)),
    (6 * m, ask(103, AIDE, "next_aide")),
    (8 * m, MarkAtRisk("no_accept")),
    (8 * m, ask(201, CENTRE, "at_risk")),
    (9 * m, TimeOutAttempt(103)),
    (11 * m, TimeOutAttempt(201)),
    (11 * m, ask(301, COUNTY, "centre_unavailable")),
]

LADDER_CASES: list[tuple[str, tuple[rules.Candidate, ...], list[Reply], Log]] = [
    (
        "nobody answers: three aides 3 minutes apart, centre at T0+8, county 3 minutes later",
        NEAR,
        [],
        [*SILENT_TO_COUNTY, (15 * m, MarkBreached())],
    ),
    (
        "the township centre answers after its 3 minutes: the county is asked, the centre's 1 "
        "still takes the alert",
        NEAR,
        [Reply(at(12), 201, "accept"), Reply(at(14), 201, "on_scene")],
        SILENT_TO_COUNTY,
    ),
    (
        "a decline moves to the next aide at once",
        NEAR,
        [Reply(at(1, 10), 101, "decline")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (1 * m + 10 * s, ask(102, AIDE, "next_aide")),
            (4 * m + 10 * s, TimeOutAttempt(102)),
            (4 * m + 10 * s, ask(103, AIDE, "next_aide")),
            (7 * m + 10 * s, TimeOutAttempt(103)),
            (7 * m + 10 * s, MarkAtRisk("aides_exhausted")),
            (7 * m + 10 * s, ask(201, CENTRE, "aides_exhausted")),
            (10 * m + 10 * s, TimeOutAttempt(201)),
            (10 * m + 10 * s, ask(301, COUNTY, "centre_unavailable")),
            (15 * m, MarkBreached()),
        ],
    ),
    (
        "a failed SMS moves to the next aide at once",
        NEAR,
        [Reply(at(0, 20), 101, "failed")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (20 * s, ask(102, AIDE, "next_aide")),
            (3 * m + 20 * s, TimeOutAttempt(102)),
            (3 * m + 20 * s, ask(103, AIDE, "next_aide")),
            (6 * m + 20 * s, TimeOutAttempt(103)),
            (6 * m + 20 * s, MarkAtRisk("aides_exhausted")),
            (6 * m + 20 * s, ask(201, CENTRE, "aides_exhausted")),
            (9 * m + 20 * s, TimeOutAttempt(201)),
            (9 * m + 20 * s, ask(301, COUNTY, "centre_unavailable")),
            (15 * m, MarkBreached()),
        ],
    ),
    (
        "no aide can arrive in time: the centre too, at T0",
        ranking(16, 20),
        [Reply(at(2), 201, "accept"), Reply(at(10), 201, "on_scene")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (0 * m, MarkAtRisk("no_aide_in_time")),
            (0 * m, ask(201, CENTRE, "no_aide_in_time")),
        ],
    ),
    (
        "no aide at all: the centre at T0",
        ranking(),
        [Reply(at(1), 201, "accept"), Reply(at(13), 201, "on_scene")],
        [
            (0 * m, MarkAtRisk("no_aide_in_time")),
            (0 * m, ask(201, CENTRE, "no_aide_in_time")),
        ],
    ),
    (
        "the aides run out (one declines, one SMS fails, no third): the centre at once",
        ranking(4, 5),
        [Reply(at(1), 101, "decline"), Reply(at(2), 102, "failed")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (1 * m, ask(102, AIDE, "next_aide")),
            (2 * m, MarkAtRisk("aides_exhausted")),
            (2 * m, ask(201, CENTRE, "aides_exhausted")),
            (5 * m, TimeOutAttempt(201)),
            (5 * m, ask(301, COUNTY, "centre_unavailable")),
            (15 * m, MarkBreached()),
        ],
    ),
    (
        "the next aide could not make it in time: the centre is asked then, not at T0+8",
        ranking(4, 11),
        [],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (3 * m, TimeOutAttempt(101)),
            (3 * m, ask(102, AIDE, "next_aide")),
            # 102 is 11 minutes away: from T0+4 an accept would arrive after T0+15.
            (4 * m, MarkAtRisk("no_aide_in_time")),
            (4 * m, ask(201, CENTRE, "no_aide_in_time")),
            (6 * m, TimeOutAttempt(102)),
            (7 * m, TimeOutAttempt(201)),
            (7 * m, ask(301, COUNTY, "centre_unavailable")),
            (15 * m, MarkBreached()),
        ],
    ),
    (
        "accepted and on scene in time: nothing more",
        NEAR,
        [Reply(at(1), 101, "accept"), Reply(at(6), 101, "on_scene")],
        [(0 * m, ask(101, AIDE, "nearest"))],
    ),
    (
        "accepted but late for the travel time: a reminder (and at risk), then the breach",
        NEAR,
        [Reply(at(1), 101, "accept")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            # 4 minutes away + 2 minutes' grace after the accept at T0+1
            (7 * m, RemindTaker(101)),
            (7 * m, MarkAtRisk("taker_late")),
            (15 * m, MarkBreached()),
            (15 * m, ask(301, COUNTY, "breached")),
        ],
    ),
    (
        "accepted by someone who cannot arrive in time: at risk at once",
        ranking(4, 5, 6, centre=12),
        [Reply(at(9), 201, "accept"), Reply(at(14), 201, "on_scene")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (3 * m, TimeOutAttempt(101)),
            (3 * m, ask(102, AIDE, "next_aide")),
            (6 * m, TimeOutAttempt(102)),
            (6 * m, ask(103, AIDE, "next_aide")),
            (8 * m, MarkAtRisk("no_accept")),
            (8 * m, ask(201, CENTRE, "at_risk")),
            # the centre accepts at T0+9 and arrives at T0+14 (on scene, in time)
        ],
    ),
    (
        "the taker withdraws (0 after 1): the ladder goes on at once",
        NEAR,
        [Reply(at(1), 101, "accept"), Reply(at(4), 101, "withdraw")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (4 * m, ask(102, AIDE, "next_aide")),
            (7 * m, TimeOutAttempt(102)),
            (7 * m, ask(103, AIDE, "next_aide")),
            (8 * m, MarkAtRisk("no_accept")),
            (8 * m, ask(201, CENTRE, "at_risk")),
            (10 * m, TimeOutAttempt(103)),
            (11 * m, TimeOutAttempt(201)),
            (11 * m, ask(301, COUNTY, "centre_unavailable")),
            (15 * m, MarkBreached()),
        ],
    ),
    (
        "the township centre declines: the county at once",
        ranking(),
        [Reply(at(2), 201, "decline")],
        [
            (0 * m, MarkAtRisk("no_aide_in_time")),
            (0 * m, ask(201, CENTRE, "no_aide_in_time")),
            (2 * m, ask(301, COUNTY, "centre_unavailable")),
            (15 * m, MarkBreached()),
        ],
    ),
    (
        "no township centre on the ranking: the county takes its place",
        ranking(4, centre=None),
        [Reply(at(1), 101, "decline")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (1 * m, MarkAtRisk("aides_exhausted")),
            (1 * m, ask(301, COUNTY, "centre_unavailable")),
            (15 * m, MarkBreached()),
        ],
    ),
]


@pytest.mark.parametrize(
    ("lines", "replies", "expected"),
    [case[1:] for case in LADDER_CASES],
    ids=[case[0] for case in LADDER_CASES],
)
def test_the_ladder_step_by_step(
    lines: tuple[rules.Candidate, ...], replies: list[Reply], expected: Log
) -> None:
    _, log = drive(new_alert(lines), LADDER, replies, until=at(20), every_second=False)
    assert log == expected


@pytest.mark.parametrize(
    ("lines", "replies"),
    [case[1:3] for case in LADDER_CASES],
    ids=[case[0] for case in LADDER_CASES],
)
def test_next_check_at_never_misses_a_step(
    lines: tuple[rules.Candidate, ...], replies: list[Reply]
) -> None:
    """Looking only at `next_check_at` (the durable timer) does exactly what looking every
    second does: no step is late, none is early, none is missed."""
    state = new_alert(lines)
    _, sparse = drive(state, LADDER, replies, until=at(20), every_second=False)
    _, dense = drive(state, LADDER, replies, until=at(20), every_second=True)
    assert sparse == dense


def test_a_step_already_taken_is_never_taken_again() -> None:
    """Planning twice at the same instant (two watchers, or a restart) repeats nothing."""
    state, done, next_check = settle(new_alert(NEAR), LADDER, at(3))
    assert done  # T0+3 with nothing asked yet: the nearest aide, at once
    assert rules.plan(state, LADDER, at(3)).actions == ()
    assert next_check == at(6)


def test_the_product_default_ladder() -> None:
    """The one test of the defaults (README, "The ladder's rungs, by default"): a region with
    no settings of its own runs up to 3 aides, 3 minutes each; the township centre at 8 minutes;
    the county when the centre has not answered in 3 minutes; P1 responders silent for a minute
    (at night: at once) are called on the phone. Every other ladder test pins its
    ladder (tests/builders.py), so changing a default breaks only this test."""
    assert rules.Ladder() == rules.Ladder(
        respond_minutes=15,
        accept_timeout_s=180,
        max_aides=3,
        at_risk_s=480,
        centre_answer_s=180,
        reminder_grace_s=120,
        notify_guardians=True,
        voice_after_s=60,
        voice_priorities=(1,),
        voice_at_night=True,
    )
    village = Region(code="V", name="V", level="village", response_minutes=15, ladder={})
    assert regions.ladder_for([village]) == rules.Ladder()


def test_the_ladder_is_data_per_region() -> None:
    """A region with a 2-minute accept timeout and two aides runs that ladder."""
    ladder = builders.ladder(accept_timeout_s=120, max_aides=2, at_risk_s=300, centre_answer_s=60)
    _, log = drive(new_alert(NEAR), ladder, [], until=at(20), every_second=False)
    assert log == [
        (0 * m, ask(101, AIDE, "nearest")),
        (2 * m, TimeOutAttempt(101)),
        (2 * m, ask(102, AIDE, "next_aide")),
        (4 * m, TimeOutAttempt(102)),
        (4 * m, MarkAtRisk("aides_exhausted")),
        (4 * m, ask(201, CENTRE, "aides_exhausted")),
        (5 * m, TimeOutAttempt(201)),
        (5 * m, ask(301, COUNTY, "centre_unavailable")),
        (15 * m, MarkBreached()),
    ]
    assert rules.Ladder.from_snapshot(ladder.snapshot()) == ladder


def test_a_welfare_check_runs_the_ladder_over_two_hours() -> None:
    """At risk after the same share of the window (64 of 120 minutes), not after 8 minutes;
    the township centre has 24 minutes to answer before the county is asked, not 3."""
    ladder = LADDER.for_window(timedelta(hours=2))
    assert ladder.respond_minutes == 120
    state = new_alert(ranking(20), window=timedelta(hours=2))
    _, log = drive(state, ladder, [], until=at(130), every_second=False)
    assert log == [
        (0 * m, ask(101, AIDE, "nearest")),
        (3 * m, TimeOutAttempt(101)),
        (3 * m, MarkAtRisk("aides_exhausted")),
        (3 * m, ask(201, CENTRE, "aides_exhausted")),
        (27 * m, TimeOutAttempt(201)),
        (27 * m, ask(301, COUNTY, "centre_unavailable")),
        (120 * m, MarkBreached()),
    ]
    state = new_alert(ranking(20, 25, 30), window=timedelta(hours=2))
    reply = [Reply(at(1), 101, "accept"), Reply(at(15), 101, "on_scene")]
    _, log = drive(state, ladder, reply, until=at(130), every_second=False)
    assert log == [(0 * m, ask(101, AIDE, "nearest"))]
    assert ladder.at_risk_s == pytest.approx(64 * 60)


def test_a_p3_that_became_urgent_starts_its_clock_when_it_did() -> None:
    """Power out since 10:00, urgent at 14:00: at risk at 14:08, not at once."""
    raised = T0 - timedelta(hours=4)
    state = rules.AlertState(
        priority=2,
        status="raised",
        raised_at=raised,
        respond_by=T0 + timedelta(minutes=15),
        ranking=NEAR,
    )
    _, done, next_check = settle(state, LADDER, T0)
    assert done == [ask(101, AIDE, "nearest")]
    assert next_check == at(3)
