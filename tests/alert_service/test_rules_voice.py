"""The ladder with voice call-outs (issue 19) as pure table cases on a fake clock: when the
silent responder's phone is called, and what the call's outcome does to the ladder."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from alert_service import regions, rules
from alert_service.rules import AskResponder, CallResponder, MarkAtRisk, TimeOutAttempt
from anxin.models import Region
from tests import builders
from tests.support.ladder_sim import T0, Reply, at, drive, new_alert, ranking

NEAR = ranking(4, 5, 6)
AIDE, CENTRE, COUNTY = "aide", "township_centre", "county_centre"
m = timedelta(minutes=1)
s = timedelta(seconds=1)
VOICE = builders.ladder(voice_priorities=(1,), voice_after_s=60)
# 02:00 in Asia/Shanghai (T0 is 10:00 there): inside the default night, 22:00–06:00.
NIGHT_T0 = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def ask(responder_id: int, role: str, reason: str) -> AskResponder:
    return AskResponder(responder_id, role, reason)


def call(responder_id: int, role: str, reason: str) -> CallResponder:
    return CallResponder(responder_id, role, reason)


CASES: list[tuple[str, rules.Ladder, list[Reply], list[tuple[timedelta, rules.Action]]]] = [
    (
        "aide silent on SMS: called after a minute, takes it by key 1",
        VOICE,
        [Reply(at(1, 25), 101, "accept"), Reply(at(5), 101, "on_scene")],
        [(0 * m, ask(101, AIDE, "nearest")), (1 * m, call(101, AIDE, "no_sms_answer"))],
    ),
    (
        "call not answered: the next aide at once, and they are called a minute later",
        VOICE,
        [Reply(at(1, 30), 101, "failed")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (1 * m, call(101, AIDE, "no_sms_answer")),
            (1 * m + 30 * s, ask(102, AIDE, "next_aide")),
            (2 * m + 30 * s, call(102, AIDE, "no_sms_answer")),
            (4 * m + 30 * s, TimeOutAttempt(102)),
            (4 * m + 30 * s, ask(103, AIDE, "next_aide")),
            (5 * m + 30 * s, call(103, AIDE, "no_sms_answer")),
            (7 * m + 30 * s, TimeOutAttempt(103)),
            (7 * m + 30 * s, MarkAtRisk("aides_exhausted")),
            (7 * m + 30 * s, ask(201, CENTRE, "aides_exhausted")),
            (8 * m + 30 * s, call(201, CENTRE, "no_sms_answer")),
            (10 * m + 30 * s, TimeOutAttempt(201)),
            (10 * m + 30 * s, ask(301, COUNTY, "centre_unavailable")),
            (11 * m + 30 * s, call(301, COUNTY, "no_sms_answer")),
        ],
    ),
    (
        "key 0 on the call: declined, the next aide at once",
        VOICE,
        [
            Reply(at(1, 20), 101, "decline"),
            Reply(at(1, 40), 102, "accept"),
            Reply(at(6), 102, "on_scene"),
        ],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (1 * m, call(101, AIDE, "no_sms_answer")),
            (1 * m + 20 * s, ask(102, AIDE, "next_aide")),
        ],
    ),
    (
        "the SMS fails: the same aide is called at once, not skipped",
        VOICE,
        [
            Reply(at(0, 5), 101, "sms_failed"),
            Reply(at(0, 40), 101, "accept"),
            Reply(at(4), 101, "on_scene"),
        ],
        [(0 * m, ask(101, AIDE, "nearest")), (5 * s, call(101, AIDE, "sms_failed"))],
    ),
    (
        "an answer by SMS before the minute is out: no call",
        VOICE,
        [Reply(at(0, 50), 101, "accept"), Reply(at(4), 101, "on_scene")],
        [(0 * m, ask(101, AIDE, "nearest"))],
    ),
    (
        "voice_after_s as long as the aide's wait: never called, the ladder as before",
        replace(VOICE, voice_after_s=180),
        [Reply(at(3, 10), 102, "accept"), Reply(at(8), 102, "on_scene")],
        [
            (0 * m, ask(101, AIDE, "nearest")),
            (3 * m, TimeOutAttempt(101)),
            (3 * m, ask(102, AIDE, "next_aide")),
        ],
    ),
    (
        "a region's own voice wait: 30 s",
        replace(VOICE, voice_after_s=30),
        [Reply(at(0, 45), 101, "accept"), Reply(at(4), 101, "on_scene")],
        [(0 * m, ask(101, AIDE, "nearest")), (30 * s, call(101, AIDE, "no_sms_answer"))],
    ),
    (
        "voice off (no priority calls): SMS only",
        replace(VOICE, voice_priorities=()),
        [Reply(at(2), 101, "accept"), Reply(at(5), 101, "on_scene")],
        [(0 * m, ask(101, AIDE, "nearest"))],
    ),
]


@pytest.mark.parametrize(
    ("ladder", "replies", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_ladder_with_voice(
    ladder: rules.Ladder,
    replies: list[Reply],
    expected: list[tuple[timedelta, rules.Action]],
) -> None:
    for every_second in (False, True):
        _, log = drive(new_alert(NEAR), ladder, replies, until=at(12), every_second=every_second)
        assert log == expected, f"every_second={every_second}"


def _night_alert(priority: int = 1) -> rules.AlertState:
    return replace(
        new_alert(NEAR), priority=priority, raised_at=NIGHT_T0, respond_by=NIGHT_T0 + 15 * m
    )


def test_at_night_the_aide_is_called_at_once() -> None:
    """02:00 in the elder's night: an SMS wakes nobody, so the phone rings with the SMS."""
    replies = [
        Reply(NIGHT_T0 + 40 * s, 101, "accept"),
        Reply(NIGHT_T0 + 4 * m, 101, "on_scene"),
    ]
    for every_second in (False, True):
        _, log = drive(
            _night_alert(), VOICE, replies, until=NIGHT_T0 + 12 * m, every_second=every_second
        )
        assert log == [(0 * m, ask(101, AIDE, "nearest")), (0 * m, call(101, AIDE, "night"))]


def test_the_elders_own_night_and_the_region_switch() -> None:
    """The night is the elder's (snapshotted on the ladder): an elder whose night ends at 01:00
    is not in it at 02:00; and a region may turn calling at night off."""
    late_riser = replace(VOICE, night_start="20:00", night_end="01:00")
    no_night = replace(VOICE, voice_at_night=False)
    for ladder in (late_riser, no_night):
        _, log = drive(
            _night_alert(),
            ladder,
            [
                Reply(NIGHT_T0 + 90 * s, 101, "accept"),
                Reply(NIGHT_T0 + 5 * m, 101, "on_scene"),
            ],
            until=NIGHT_T0 + 12 * m,
            every_second=False,
        )
        assert log == [
            (0 * m, ask(101, AIDE, "nearest")),
            (1 * m, call(101, AIDE, "no_sms_answer")),
        ]


def test_p2_is_called_only_where_the_region_says_so() -> None:
    replies = [
        Reply(NIGHT_T0 + 2 * m, 101, "accept"),
        Reply(NIGHT_T0 + 5 * m, 101, "on_scene"),
    ]
    p2 = _night_alert(priority=2)
    _, log = drive(p2, VOICE, replies, until=NIGHT_T0 + 12 * m, every_second=False)
    assert log == [(0 * m, ask(101, AIDE, "nearest"))]
    with_p2 = replace(VOICE, voice_priorities=(1, 2))
    _, log = drive(p2, with_p2, replies, until=NIGHT_T0 + 12 * m, every_second=False)
    assert log == [(0 * m, ask(101, AIDE, "nearest")), (0 * m, call(101, AIDE, "night"))]


def test_a_timed_out_aide_is_not_called() -> None:
    """A watcher that looks late (past the aide's wait) moves on; it does not ring the phone of
    someone whose turn is over."""
    asked = replace(
        new_alert(NEAR),
        status="dispatching",
        attempts=(rules.AttemptState(101, AIDE, T0, "pending", 4),),
    )
    decided = rules.plan(asked, VOICE, at(3, 5))
    assert not [a for a in decided.actions if isinstance(a, CallResponder)]
    assert TimeOutAttempt(101) in decided.actions


def test_the_voice_settings_are_data_per_region_and_snapshotted() -> None:
    county = Region(
        code="C", name="C", level="county", response_minutes=15, ladder={"voice_after_s": 45}
    )
    village = Region(
        code="V",
        name="V",
        level="village",
        response_minutes=15,
        ladder={"voice_priorities": [1, 2]},
    )
    ladder = regions.ladder_for([village, county])
    assert (ladder.voice_after_s, ladder.voice_priorities) == (45, (1, 2))
    assert rules.Ladder.from_snapshot(ladder.snapshot()) == ladder
