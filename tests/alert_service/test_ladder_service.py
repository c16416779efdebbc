"""The ladder through the database: a fake clock drives `watcher.tick`, and the test reads what
an operator and the aides would see — dispatch attempts, the SMS outbox, the alert's timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alert_service.responses import LadderResponses
from anxin.clock import FakeClock
from anxin.db import transaction
from dispatcher import inbound
from dispatcher import outbox as dispatch_outbox
from tests.builders import (
    act,
    alert,
    attempts,
    event,
    home,
    open_alerts,
    outbox,
    phone_of,
    steps,
    tick_at,
    timeline,
)
from tests.support.harness import Seeded

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


def minutes(n: float, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=n, seconds=seconds)


async def test_nobody_answers_the_whole_ladder_runs_once_each_step_on_time(
    region: Seeded,
) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    where = await home(sessions)
    alert_id = await event(sessions, where, "sos", T0)
    assert alert_id is not None
    raised = await alert(sessions, alert_id)
    assert (raised.priority, raised.status, raised.respond_by) == (1, "dispatching", minutes(15))
    aides = [c["responder_id"] for c in raised.ranking if c["kind"] == "aide"]
    centre = next(c for c in raised.ranking if c["kind"] == "township_centre")
    county = next(c for c in raised.ranking if c["kind"] == "county_centre")

    # T0: the nearest aide, asked by the watcher that the raising transaction woke.
    tried = await attempts(sessions, alert_id)
    assert [(a.responder_id, a.role, a.asked_at) for a in tried][:1] == [(aides[0], "aide", T0)]
    dispatch_sms = await outbox(sessions, alert_id, "dispatch")
    assert dispatch_sms[0].to_phone == await phone_of(sessions, aides[0])
    assert dispatch_sms[0].created_at == T0 and raised.code in dispatch_sms[0].body
    assert len(await outbox(sessions, alert_id, "guardian")) == len(where.elder.guardian_phones)

    # 2:59 waits; 3:00 moves to the next aide; 6:00 to the third; 9:00 the third times out.
    # The township centre is asked at T0+8 at the latest — earlier when the aide being asked
    # could not make it in time — and the alert is marked at risk that same second; 3 minutes
    # without its answer, the county centre is asked.
    assert await tick_at(sessions, clock, minutes(2, 59)) == 0
    # From there on the watcher wakes when the alert's durable timer says.
    while (due := (await alert(sessions, alert_id)).next_check_at) and due < minutes(15):
        await tick_at(sessions, clock, due)
    assert await tick_at(sessions, clock, minutes(14, 59)) == 0

    tried = await attempts(sessions, alert_id)
    asked_aides = [(a.responder_id, a.asked_at, a.answer) for a in tried if a.role == "aide"]
    assert asked_aides == [
        (aides[0], T0, "timed_out"),
        (aides[1], minutes(3), "timed_out"),
        (aides[2], minutes(6), "timed_out"),
    ]
    centre_attempt = next(a for a in tried if a.role == "township_centre")
    assert centre_attempt.responder_id == centre["responder_id"]
    assert centre_attempt.asked_at <= minutes(8)
    entries = await timeline(sessions, alert_id)
    at_risk = [e for e in entries if e.action == "at_risk"]
    assert len(at_risk) == 1 and at_risk[0].at == centre_attempt.asked_at

    # The township centre, silent for 3 minutes like an aide, gives way to the county centre.
    assert centre_attempt.answer == "timed_out"
    assert (tried[-1].responder_id, tried[-1].role, tried[-1].asked_at) == (
        county["responder_id"],
        "county_centre",
        centre_attempt.asked_at + timedelta(minutes=3),
    )

    # 15:00: breached, the operators see it; the county centre is not asked twice.
    assert await tick_at(sessions, clock, minutes(15)) == 1
    breached = await alert(sessions, alert_id)
    assert breached.breached and breached.at_risk and breached.on_scene_at is None
    assert await attempts(sessions, alert_id) == tried
    assert breached.next_check_at is None  # nothing left on the ladder

    # Every step exactly once, at its second, by the system.
    history = await steps(sessions, alert_id)
    device = f"device:{where.devices['sos_button'].id}"
    assert history[:3] == [
        (T0, device, "raised"),
        (T0, "system", "ranked"),
        (T0, "system", "asked"),
    ]
    system = [(at, action) for at, actor, action in history if actor == "system"]
    no_answer = [
        (e.at, e.detail["responder_id"])
        for e in await timeline(sessions, alert_id)
        if e.action == "no_answer"
    ]
    assert sorted(no_answer) == sorted(
        [
            (minutes(3), aides[0]),
            (minutes(6), aides[1]),
            (minutes(9), aides[2]),
            (centre_attempt.asked_at + timedelta(minutes=3), centre["responder_id"]),
        ]
    )
    assert [at for at, action in system if action == "breached"] == [minutes(15)]
    asked = [
        (e.at, e.detail["responder_id"], e.detail["role"])
        for e in await timeline(sessions, alert_id)
        if e.action == "asked"
    ]
    assert asked == [(a.asked_at, a.responder_id, a.role) for a in tried]
    sms_to = [s.responder_id for s in await outbox(sessions, alert_id, "dispatch")]
    assert sms_to == [a.responder_id for a in tried]  # one call-out SMS per attempt, no more

    # Running the watcher again at the same second, or later, repeats nothing.
    assert await tick_at(sessions, clock, minutes(15)) == 0
    assert await tick_at(sessions, clock, minutes(40)) == 0
    assert len(await steps(sessions, alert_id)) == len(history)


async def test_decline_and_failed_sms_move_on_at_once(region: Seeded) -> None:
    sessions = region.sessions
    alert_id = await event(sessions, await home(sessions), "sos", T0)
    assert alert_id is not None
    ranking = (await alert(sessions, alert_id)).ranking
    aides = [c["responder_id"] for c in ranking if c["kind"] == "aide"][:3]

    await act(sessions, alert_id, "decline", aides[0], minutes(1, 10))
    tried = [a for a in await attempts(sessions, alert_id) if a.role == "aide"]
    assert [(a.responder_id, a.answer, a.asked_at) for a in tried] == [
        (aides[0], "declined", T0),
        (aides[1], "pending", minutes(1, 10)),
    ]
    # The call-out SMS to the second aide fails (undelivered receipt): the third at once.
    second_sms = next(
        m for m in await outbox(sessions, alert_id, "dispatch") if m.responder_id == aides[1]
    )
    async with transaction(sessions) as session:
        row = await session.get(type(second_sms), second_sms.id)
        assert row is not None
        await dispatch_outbox.sms_failed(
            session, row, "receipt undelivered 30003", minutes(1, 40), responses=LadderResponses()
        )
    tried = [a for a in await attempts(sessions, alert_id) if a.role == "aide"]
    assert [(a.responder_id, a.answer) for a in tried] == [
        (aides[0], "declined"),
        (aides[1], "failed"),
        (aides[2], "pending"),
    ]
    assert tried[2].asked_at == minutes(1, 40)
    history = await steps(sessions, alert_id)
    assert (minutes(1, 10), f"responder:{aides[0]}", "declined") in history
    assert (minutes(1, 40), "system", "sms_failed") in history


async def test_accept_then_late_reminder_then_on_scene_in_time(region: Seeded) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    alert_id = await event(sessions, await home(sessions), "sos", T0)
    assert alert_id is not None
    nearest = (await alert(sessions, alert_id)).ranking[0]
    taker, eta = nearest["responder_id"], float(nearest["eta_minutes"])

    await act(sessions, alert_id, "accept", taker, minutes(1))
    accepted = await alert(sessions, alert_id)
    assert (accepted.status, accepted.accepted_by, accepted.accepted_at) == (
        "accepted",
        taker,
        minutes(1),
    )
    # Late for the travel time: ETA + 2 minutes' grace after the accept.
    remind_at = (minutes(1) + timedelta(minutes=eta + 2)).replace(microsecond=0)
    assert accepted.next_check_at is not None
    assert accepted.next_check_at.replace(microsecond=0) == remind_at
    await tick_at(sessions, clock, remind_at - timedelta(seconds=1))
    assert await outbox(sessions, alert_id, "reminder") == []
    await tick_at(sessions, clock, remind_at + timedelta(seconds=1))
    reminders = await outbox(sessions, alert_id, "reminder")
    assert [r.responder_id for r in reminders] == [taker]
    history = await steps(sessions, alert_id)
    assert ("system", "reminded") in [(actor, action) for _, actor, action in history]

    await act(sessions, alert_id, "on_scene", taker, minutes(14, 59))
    met = await alert(sessions, alert_id)
    assert met.status == "on_scene" and met.on_scene_at == minutes(14, 59)
    assert not met.breached and met.next_check_at is None
    on_scene = [e for e in await timeline(sessions, alert_id) if e.action == "on_scene"]
    assert on_scene[0].detail == {"met": True}
    assert on_scene[0].actor == f"responder:{taker}"
    assert await tick_at(sessions, clock, minutes(15)) == 0
    assert not (await alert(sessions, alert_id)).breached


async def test_the_taker_withdraws_and_the_next_aide_is_asked(region: Seeded) -> None:
    sessions = region.sessions
    alert_id = await event(sessions, await home(sessions), "sos", T0)
    assert alert_id is not None
    aides = [c["responder_id"] for c in (await alert(sessions, alert_id)).ranking][:2]
    await act(sessions, alert_id, "accept", aides[0], minutes(1))
    await act(sessions, alert_id, "decline", aides[0], minutes(4))  # the reminder invites "0"
    reopened = await alert(sessions, alert_id)
    assert (reopened.status, reopened.accepted_by) == ("dispatching", None)
    tried = [a for a in await attempts(sessions, alert_id) if a.role == "aide"]
    assert [(a.responder_id, a.answer, a.asked_at) for a in tried] == [
        (aides[0], "declined", T0),
        (aides[1], "pending", minutes(4)),
    ]
    assert (minutes(4), f"responder:{aides[0]}", "withdrew") in await steps(sessions, alert_id)


async def test_fall_flags_call_120_and_tells_the_guardians(region: Seeded) -> None:
    sessions = region.sessions
    where = await home(sessions)
    alert_id = await event(sessions, where, "fall", T0, device_kind="bed_sensor")
    assert alert_id is not None
    raised = await alert(sessions, alert_id)
    assert raised.call_120 and raised.priority == 1
    assert (T0, "system", "call_120_flagged") in await steps(sessions, alert_id)
    guardians = await outbox(sessions, alert_id, "guardian")
    assert sorted(g.to_phone for g in guardians) == sorted(where.elder.guardian_phones)
    assert all(g.responder_id is None for g in guardians)  # informational: nobody to answer


async def test_repeat_press_joins_and_tells_the_taker(region: Seeded) -> None:
    sessions = region.sessions
    where = await home(sessions)
    alert_id = await event(sessions, where, "sos", T0)
    assert alert_id is not None
    taker = (await alert(sessions, alert_id)).ranking[0]["responder_id"]
    # Before anyone took it: counted and on the timeline, no extra SMS to anyone.
    assert await event(sessions, where, "sos", minutes(0, 40)) == alert_id
    assert await outbox(sessions, alert_id, "pressed_again") == []
    await act(sessions, alert_id, "accept", taker, minutes(1))
    assert await event(sessions, where, "sos", minutes(2)) == alert_id
    joined = await alert(sessions, alert_id)
    assert joined.trigger_count == 3 and joined.last_trigger_at == minutes(2)
    assert len(await open_alerts(sessions, where.elder_id)) == 1
    again = await outbox(sessions, alert_id, "pressed_again")
    assert [(s.responder_id, s.created_at) for s in again] == [(taker, minutes(2))]
    assert "3" in again[0].body
    triggered = [e for e in await timeline(sessions, alert_id) if e.action == "triggered_again"]
    assert [(e.at, e.detail["trigger_count"]) for e in triggered] == [
        (minutes(0, 40), 2),
        (minutes(2), 3),
    ]


async def test_a_stuck_button_tells_the_taker_once_per_window(region: Seeded) -> None:
    sessions = region.sessions
    where = await home(sessions)
    alert_id = await event(sessions, where, "sos", T0)
    assert alert_id is not None
    taker = (await alert(sessions, alert_id)).ranking[0]["responder_id"]
    await act(sessions, alert_id, "accept", taker, minutes(0, 30))
    # Pressed every 10 s for 9 minutes: told in the first 2 minutes, then at 2, 4 and 8.
    for second in range(40, 9 * 60, 10):
        assert await event(sessions, where, "sos", minutes(0, second)) == alert_id
    again = await outbox(sessions, alert_id, "pressed_again")
    assert [s.created_at for s in again] == [minutes(0, 40), minutes(2), minutes(4), minutes(8)]
    assert (await alert(sessions, alert_id)).trigger_count == 1 + len(range(40, 9 * 60, 10))


async def test_an_aide_gone_off_duty_since_the_ranking_is_skipped(region: Seeded) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    where = await home(sessions)
    alert_id = await event(sessions, where, "sos", T0)
    assert alert_id is not None
    ranking = (await alert(sessions, alert_id)).ranking
    aides = [c["responder_id"] for c in ranking if c["kind"] == "aide"][:3]
    async with transaction(sessions) as session:
        done = await inbound.handle_inbound(
            session,
            responses=LadderResponses(),
            from_phone=await phone_of(sessions, aides[1]),
            to_phone="+8610690000000",
            body="下班",
            sid="SM-off-duty",
            now=minutes(1),
        )
    assert done == "duty:False"
    await tick_at(sessions, clock, minutes(3))
    tried = [a for a in await attempts(sessions, alert_id) if a.role == "aide"]
    assert [(a.responder_id, a.asked_at) for a in tried] == [(aides[0], T0), (aides[2], minutes(3))]
    assert (minutes(3), "system", "responder_off_duty") in await steps(sessions, alert_id)
    assert aides[1] not in [c["responder_id"] for c in (await alert(sessions, alert_id)).ranking]


async def test_sos_cancel_marks_but_never_closes(region: Seeded) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    where = await home(sessions)
    alert_id = await event(sessions, where, "sos", T0)
    assert alert_id is not None
    assert await event(sessions, where, "sos_cancel", minutes(1, 30)) == alert_id
    marked = await alert(sessions, alert_id)
    assert marked.cancel_requested and marked.status == "dispatching"
    # The ladder runs on until a person confirms by phone.
    await tick_at(sessions, clock, minutes(3))
    assert len(await attempts(sessions, alert_id)) >= 2
    assert (await alert(sessions, alert_id)).status == "dispatching"

    # A cancel after 2 minutes is recorded and ignored.
    other = await home(sessions, index=1)
    other_id = await event(sessions, other, "sos", T0)
    assert other_id is not None
    await event(sessions, other, "sos_cancel", minutes(2, 1))
    assert not (await alert(sessions, other_id)).cancel_requested
    ignored = [e for e in await timeline(sessions, other_id) if e.action == "cancel_ignored"]
    assert [e.detail for e in ignored] == [{"reason": "too_late"}]


def shanghai(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 11, 23, hh, mm, ss, tzinfo=UTC) - timedelta(hours=8)


async def test_bed_exit_at_night_raises_p2_only_without_return_within_20_minutes(
    region: Seeded,
) -> None:
    sessions, clock = region.sessions, FakeClock(shanghai(23, 0))
    back_in_time = await home(sessions, index=0)
    stays_up = await home(sessions, index=1)
    for where in (back_in_time, stays_up):
        await event(sessions, where, "bed_exit", shanghai(23, 10), device_kind="bed_sensor")
    await event(sessions, back_in_time, "bed_return", shanghai(23, 25), device_kind="bed_sensor")

    assert await tick_at(sessions, clock, shanghai(23, 29, 59)) == 0
    assert await open_alerts(sessions, stays_up.elder_id) == []
    await tick_at(sessions, clock, shanghai(23, 30))
    raised = await open_alerts(sessions, stays_up.elder_id)
    assert [(a.kind, a.priority, a.raised_at, a.respond_by) for a in raised] == [
        ("bed_exit", 2, shanghai(23, 30), shanghai(23, 45))
    ]
    assert raised[0].status == "dispatching"  # the nearest aide asked at once
    # Returning at 23:31 does not undo it: a person checks on the elder.
    await event(sessions, stays_up, "bed_return", shanghai(23, 31), device_kind="bed_sensor")
    assert (await alert(sessions, raised[0].id or 0)).status == "dispatching"
    await tick_at(sessions, clock, shanghai(23, 40))
    assert await open_alerts(sessions, back_in_time.elder_id) == []


async def test_power_lost_over_4_hours_for_an_elder_alone_becomes_urgent(region: Seeded) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    alone = await home(sessions, living_alone=True)
    with_family = await home(sessions, living_alone=False)
    alone_id = await event(sessions, alone, "power_lost", T0)
    family_id = await event(sessions, with_family, "power_lost", T0)
    assert alone_id is not None and family_id is not None
    first = await alert(sessions, alone_id)
    assert (first.priority, first.respond_by, first.status) == (3, None, "raised")

    assert await tick_at(sessions, clock, T0 + timedelta(hours=3, minutes=59)) == 0
    await tick_at(sessions, clock, T0 + timedelta(hours=4))
    urgent = await alert(sessions, alone_id)
    four_hours = T0 + timedelta(hours=4)
    assert (urgent.priority, urgent.respond_by) == (2, four_hours + timedelta(minutes=15))
    assert (four_hours, "system", "escalated") in await steps(sessions, alone_id)
    tried = await attempts(sessions, alone_id)
    assert [(a.role, a.asked_at) for a in tried] == [("aide", four_hours)]
    assert (await alert(sessions, family_id)).priority == 3

    # Power back for the family before it mattered: the device trouble closes itself.
    await event(sessions, with_family, "power_restored", T0 + timedelta(hours=5))
    assert (await alert(sessions, family_id)).outcome == "device_recovered"
    # ...but not once a person is on the way.
    await event(sessions, alone, "power_restored", T0 + timedelta(hours=5))
    assert (await alert(sessions, alone_id)).status == "dispatching"


async def test_silent_sos_button_of_an_elder_alone_gets_a_welfare_check_within_2_hours(
    region: Seeded,
) -> None:
    sessions, clock = region.sessions, FakeClock(T0)
    alone = await home(sessions, living_alone=True)
    alert_id = await event(sessions, alone, "offline", T0, device_kind="sos_button")
    assert alert_id is not None
    check = await alert(sessions, alert_id)
    assert (check.kind, check.priority) == ("offline", 3)
    assert check.respond_by == T0 + timedelta(hours=2)
    assert [a.role for a in await attempts(sessions, alert_id)] == ["aide"]
    # Not "at risk" after 8 minutes: the window is 2 hours.
    await tick_at(sessions, clock, minutes(8))
    assert not (await alert(sessions, alert_id)).at_risk
    # The button comes back: the welfare check's alert closes as recovered.
    await event(sessions, alone, "online", minutes(30), device_kind="sos_button")
    assert (await alert(sessions, alert_id)).outcome == "device_recovered"


async def test_vitals_far_out_is_p1_and_out_twice_is_p2(region: Seeded) -> None:
    sessions = region.sessions
    one, two = await home(sessions, index=0), await home(sessions, index=1)
    far = await event(
        sessions, one, "vitals", T0, device_kind="bed_sensor", data={"heart_rate": 35}
    )
    assert far is not None and (await alert(sessions, far)).priority == 1
    once = await event(
        sessions, two, "vitals", T0, device_kind="bed_sensor", data={"heart_rate": 46}
    )
    assert once is None
    twice = await event(
        sessions,
        two,
        "vitals",
        minutes(1),
        device_kind="bed_sensor",
        data={"heart_rate": 46},
        previous_vitals="out",
    )
    assert twice is not None and (await alert(sessions, twice)).priority == 2


async def test_door_open_at_night_for_a_wanderer_is_urgent(region: Seeded) -> None:
    sessions = region.sessions
    where = await home(sessions)
    async with transaction(sessions) as session:
        elder = await session.get(type(where.elder), where.elder_id)
        assert elder is not None
        elder.wanders = True
        elder.night_start, elder.night_end = "20:00", "07:00"  # this elder's own night
    where = await home(sessions)
    assert await event(sessions, where, "door_open", shanghai(15, 0)) is None
    alert_id = await event(sessions, where, "door_open", shanghai(20, 30))
    assert alert_id is not None
    assert (await alert(sessions, alert_id)).priority == 2
