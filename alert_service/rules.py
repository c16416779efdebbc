"""Pure rules: events → alerts, and the escalation ladder. No I/O; `now` is always an argument.

The ladder is a function of the alert's state and the time: `plan(state, now)` says what must
happen now and when to look again. The watcher stores that time on the alert row (the durable
timer), so a restart or a second replica picks up exactly where the ladder was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# --- events → alerts ------------------------------------------------------------------------

P1, P2, P3 = 1, 2, 3
IMMEDIATE_PRIORITY: dict[str, int] = {
    "sos": P1,
    "fall": P1,
    "smoke": P1,
    "gas": P1,
    "inactivity": P2,
    "water_leak": P2,
    "low_battery": P3,
    "tamper": P3,
    "power_lost": P3,
    "offline": P3,
}
# Events that raise a P1 alert whatever came before: the gateway stores them ahead of the rest
# of their batch (gateway.ingest.urgent_first).
P1_EVENT_TYPES = frozenset(t for t, p in IMMEDIATE_PRIORITY.items() if p == P1)
CALL_120_KINDS = frozenset({"smoke", "gas", "fall"})
BED_EXIT_GRACE = timedelta(minutes=20)
POWER_LOST_ESCALATE = timedelta(hours=4)
WELFARE_CHECK_WITHIN = timedelta(hours=2)
CANCEL_WINDOW = timedelta(minutes=2)
PRESSED_AGAIN_FIRST_WINDOW = timedelta(minutes=2)

DEFAULT_THRESHOLDS: dict[str, float] = {
    # Out of range: urgent when seen on two readings in a row.
    "heart_rate_low": 50,
    "heart_rate_high": 120,
    "resp_rate_low": 10,
    "resp_rate_high": 24,
    # Far out of range: an emergency on one reading.
    "heart_rate_far_low": 40,
    "heart_rate_far_high": 150,
    "resp_rate_far_low": 6,
    "resp_rate_far_high": 35,
}


@dataclass(frozen=True)
class ElderProfile:
    living_alone: bool = False
    wanders: bool = False
    night_start: str = "22:00"
    night_end: str = "06:00"
    timezone: str = "Asia/Shanghai"
    thresholds: dict[str, float] = field(default_factory=dict)

    def threshold(self, name: str) -> float:
        value = self.thresholds.get(name, DEFAULT_THRESHOLDS[name])
        return float(value)


@dataclass(frozen=True)
class RaiseAlert:
    kind: str
    priority: int
    respond_within: timedelta | None = None  # None → the region's 15-minute rule (P1/P2)
    call_120: bool = False


# A phone-in (代报警): what the caller says happened, raised as the device rules raise it. A call
# for help of no other kind is an SOS press by voice; a missing elder is urgent, as a wanderer's
# door open at night.
PHONE_IN_KINDS: dict[str, RaiseAlert] = {
    "fall": RaiseAlert("fall", P1, call_120=True),  # 跌倒
    "illness": RaiseAlert("illness", P1),  # 突发疾病
    "fire": RaiseAlert("smoke", P1, call_120=True),  # 火情/燃气
    "missing": RaiseAlert("missing", P2),  # 走失
    "other": RaiseAlert("sos", P1),  # 其他
}
PHONE_IN_CALLERS = ("elder", "relative", "neighbour", "hotline", "other")


@dataclass(frozen=True)
class StartTimer:
    kind: str
    due_at: datetime


@dataclass(frozen=True)
class CancelTimers:
    kind: str


@dataclass(frozen=True)
class RequestCancel:
    kind: str = "sos"


@dataclass(frozen=True)
class DeviceBackOnline:
    pass


Decision = RaiseAlert | StartTimer | CancelTimers | RequestCancel | DeviceBackOnline


def _parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def is_night(profile: ElderProfile, now: datetime) -> bool:
    """Night in the elder's own window, in the deployment's time zone (22:00–06:00 by default)."""
    local = now.astimezone(ZoneInfo(profile.timezone)).time()
    start, end = _parse_hhmm(profile.night_start), _parse_hhmm(profile.night_end)
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def vitals_state(profile: ElderProfile, data: dict[str, Any]) -> str:
    """'far' (emergency), 'out' (abnormal) or 'normal' for one reading."""
    state = "normal"
    for sign in ("heart_rate", "resp_rate"):
        value = data.get(sign)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if value <= profile.threshold(f"{sign}_far_low") or value >= profile.threshold(
            f"{sign}_far_high"
        ):
            return "far"
        if value < profile.threshold(f"{sign}_low") or value > profile.threshold(f"{sign}_high"):
            state = "out"
    return state


def decide(
    event_type: str,
    data: dict[str, Any],
    profile: ElderProfile,
    now: datetime,
    *,
    device_kind: str = "",
    previous_vitals: str = "normal",
) -> list[Decision]:
    """What one stored event means. `previous_vitals` is the state of the last reading."""
    if event_type in ("sos", "fall", "smoke", "gas", "inactivity", "water_leak", "tamper"):
        return [
            RaiseAlert(
                event_type, IMMEDIATE_PRIORITY[event_type], call_120=event_type in CALL_120_KINDS
            )
        ]
    if event_type == "low_battery":
        return [RaiseAlert("low_battery", P3)]
    if event_type == "sos_cancel":
        return [RequestCancel()]
    if event_type == "vitals":
        state = vitals_state(profile, data)
        if state == "far":
            return [RaiseAlert("vitals", P1)]
        if state == "out" and previous_vitals in ("out", "far"):
            return [RaiseAlert("vitals", P2)]
        return []
    if event_type == "bed_exit":
        if is_night(profile, now):
            return [StartTimer("bed_exit", now + BED_EXIT_GRACE)]
        return []
    if event_type == "bed_return":
        return [CancelTimers("bed_exit")]
    if event_type == "door_open":
        if profile.wanders and is_night(profile, now):
            return [RaiseAlert("door_open", P2)]
        return []
    if event_type == "power_lost":
        decisions: list[Decision] = [RaiseAlert("power_lost", P3)]
        if profile.living_alone:
            decisions.append(StartTimer("power_lost", now + POWER_LOST_ESCALATE))
        return decisions
    if event_type == "power_restored":
        return [CancelTimers("power_lost")]
    if event_type == "offline":
        # An elder living alone whose SOS button or hub is silent cannot call for help:
        # someone must look in within 2 hours.
        if profile.living_alone and device_kind in ("sos_button", "hub"):
            return [RaiseAlert("offline", P3, respond_within=WELFARE_CHECK_WITHIN)]
        return [RaiseAlert("offline", P3)]
    if event_type == "online":
        return [DeviceBackOnline()]
    return []


def timer_alert(kind: str) -> RaiseAlert:
    """What a rule timer raises when it fires unanswered."""
    if kind == "bed_exit":
        return RaiseAlert("bed_exit", P2)
    if kind == "power_lost":
        return RaiseAlert("power_lost", P2)
    raise ValueError(f"unknown rule timer {kind!r}")


def may_cancel(raised_at: datetime, now: datetime) -> bool:
    return now - raised_at <= CANCEL_WINDOW


def pressed_again_window(raised_at: datetime, now: datetime) -> int:
    """Which window a repeat press falls in; the aide who took the alert hears of the presses
    at most once per window. The windows are the first two minutes after the alert was raised,
    then windows that double (2–4, 4–8, 8–16 minutes …): news while the aide is on the way,
    yet a stuck button costs the aide about ten SMS a day, not their daily SMS allowance."""
    return int((now - raised_at) / PRESSED_AGAIN_FIRST_WINDOW).bit_length()


# --- the escalation ladder ------------------------------------------------------------------


@dataclass(frozen=True)
class Ladder:
    """Per-region escalation ladder; snapshotted onto each alert when it is raised.

    `respond_minutes` is the alert's own window (15 for P1/P2, 120 for a welfare check) and
    `at_risk_s` counts from the start of that window. `centre_answer_s`: how long the township
    centre's duty phone has to answer before the county is asked.
    """

    respond_minutes: float = 15
    accept_timeout_s: float = 180
    max_aides: int = 3
    at_risk_s: float = 480
    centre_answer_s: float = 180
    reminder_grace_s: float = 120
    notify_guardians: bool = True
    # Voice call-outs (issue 19): a responder whose call-out SMS has no answer after
    # `voice_after_s` is called on the phone — at once when the SMS failed, or (with
    # `voice_at_night`) when they were asked in the elder's night hours — for the alerts of
    # these priorities (P1; a region adds P2).
    voice_after_s: float = 60
    voice_priorities: tuple[int, ...] = (P1,)
    voice_at_night: bool = True
    # The elder's night hours and the deployment's time zone, snapshotted when the alert is
    # raised (not a region setting: `intake._new_alert` writes them).
    night_start: str = "22:00"
    night_end: str = "06:00"
    timezone: str = "Asia/Shanghai"

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Ladder:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "voice_priorities" in known:
            known["voice_priorities"] = tuple(int(p) for p in known["voice_priorities"] or ())
        return cls(**known)

    def calls(self, priority: int) -> bool:
        """Whether this ladder calls the responders of an alert of this priority."""
        return priority in self.voice_priorities

    def calls_at_once(self, asked_at: datetime) -> bool:
        """A responder asked at night is called at once (an SMS does not wake anyone)."""
        night = ElderProfile(
            night_start=self.night_start, night_end=self.night_end, timezone=self.timezone
        )
        return self.voice_at_night and is_night(night, asked_at)

    def snapshot(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def for_window(self, window: timedelta) -> Ladder:
        """This ladder stretched to another window (a 2-hour welfare check): the at-risk point
        and the township centre's time to answer keep their share of the window, so a welfare
        check is not 'at risk' after 8 minutes, nor sent to the county after 6."""
        minutes = window.total_seconds() / 60
        if minutes == self.respond_minutes:
            return self
        if not self.respond_minutes:
            return replace(self, respond_minutes=minutes, at_risk_s=minutes * 30)
        stretch = minutes / self.respond_minutes
        return replace(
            self,
            respond_minutes=minutes,
            at_risk_s=self.at_risk_s * stretch,
            centre_answer_s=self.centre_answer_s * stretch,
        )


@dataclass(frozen=True)
class AttemptState:
    responder_id: int
    role: str  # aide | township_centre | county_centre
    asked_at: datetime
    # pending | accepted | declined | timed_out | failed | superseded | withdrawn (改派: the
    # ladder does not ask them again, and a late "1" from them does not take the alert)
    answer: str
    eta_minutes: float | None = None
    called: bool = False  # their phone was called for this attempt
    sms_failed: bool = False  # the call-out SMS could not reach them


@dataclass(frozen=True)
class Candidate:
    """One line of the ranking recorded on the alert."""

    responder_id: int
    role: str
    eta_minutes: float


@dataclass(frozen=True)
class AlertState:
    priority: int
    status: str
    raised_at: datetime
    respond_by: datetime | None
    accepted_at: datetime | None = None
    accepted_by: int | None = None
    on_scene_at: datetime | None = None
    at_risk: bool = False
    breached: bool = False
    reminder_sent: bool = False
    attempts: tuple[AttemptState, ...] = ()
    ranking: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class AskResponder:
    responder_id: int
    role: str
    # nearest | next_aide | no_aide_in_time | aides_exhausted | at_risk | centre_unavailable
    # | breached
    reason: str


@dataclass(frozen=True)
class CallResponder:
    """Call this responder's phone about the attempt they have not answered."""

    responder_id: int
    role: str
    reason: str  # no_sms_answer | night | sms_failed


@dataclass(frozen=True)
class TimeOutAttempt:
    responder_id: int


@dataclass(frozen=True)
class MarkAtRisk:
    reason: str  # no_accept | no_aide_in_time | aides_exhausted | taker_cannot_make_it | taker_late


@dataclass(frozen=True)
class MarkBreached:
    arrived_late: bool = False  # someone is there, after the deadline: nobody more to send


@dataclass(frozen=True)
class RemindTaker:
    responder_id: int


Action = AskResponder | CallResponder | TimeOutAttempt | MarkAtRisk | MarkBreached | RemindTaker


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    next_check_at: datetime | None


# Answers after which a responder is no longer engaged with the alert. `superseded` is not
# among them: a responder stood down because someone else took it may be asked again if the
# taker withdraws.
_FINISHED = frozenset({"declined", "timed_out", "failed"})


def clock_started_at(state: AlertState, ladder: Ladder) -> datetime:
    """When this alert's response window opened (raised_at, or when a P3 became urgent)."""
    assert state.respond_by is not None
    return state.respond_by - timedelta(minutes=ladder.respond_minutes)


def plan(state: AlertState, ladder: Ladder, now: datetime) -> Plan:
    """Every ladder step that is due at `now`, and when the ladder must be looked at next.

    The caller applies the actions and calls again until no action is left: each call looks
    at the state as it is, so running it twice, or after a crash, never repeats a step.
    """
    if state.status == "resolved" or state.respond_by is None:
        return Plan((), None)
    respond_by = state.respond_by
    if state.on_scene_at is not None:
        # Someone is at the elder's side: the ladder is done. Arriving after the deadline is
        # still a breach on the record (the watcher may not have been there to see it).
        if state.on_scene_at > respond_by and not state.breached:
            return Plan((MarkBreached(arrived_late=True),), None)
        return Plan((), None)

    actions: list[Action] = []
    deadlines: list[datetime] = []
    at_risk = state.at_risk

    def mark_at_risk(reason: str) -> None:
        nonlocal at_risk
        if not at_risk:
            actions.append(MarkAtRisk(reason))
            at_risk = True

    def engaged(role: str) -> list[AttemptState]:
        return [a for a in state.attempts if a.role == role and a.answer != "superseded"]

    county = next((c for c in state.ranking if c.role == "county_centre"), None)
    county_engaged = bool(engaged("county_centre"))

    def ask_county(reason: str) -> None:
        nonlocal county_engaged
        if county is not None and not county_engaged:
            actions.append(AskResponder(county.responder_id, "county_centre", reason))
            county_engaged = True

    if state.accepted_at is None:
        _call_steps(state, ladder, now, actions, deadlines)
        _unaccepted_steps(state, ladder, now, actions, deadlines, mark_at_risk, ask_county)
    else:
        _accepted_steps(state, ladder, now, actions, deadlines, mark_at_risk)

    if not state.breached:
        if now >= respond_by:
            actions.append(MarkBreached())
            ask_county("breached")
        else:
            deadlines.append(respond_by)

    future = [d for d in deadlines if d > now]
    return Plan(tuple(actions), min(future) if future else None)


def _call_steps(
    state: AlertState,
    ladder: Ladder,
    now: datetime,
    actions: list[Action],
    deadlines: list[datetime],
) -> None:
    """Voice: each responder asked and silent (aide or duty phone) is called once — when their
    SMS failed, at once when asked at night, else `voice_after_s` after the SMS. The call's
    outcome comes back as an answer (key 1/0) or as a failed attempt (no answer, busy)."""
    if not ladder.calls(state.priority):
        return
    call_after = timedelta(seconds=ladder.voice_after_s)
    answer_within = {
        "aide": timedelta(seconds=ladder.accept_timeout_s),
        "township_centre": timedelta(seconds=ladder.centre_answer_s),
    }
    for attempt in state.attempts:
        if attempt.answer != "pending" or attempt.called:
            continue
        within = answer_within.get(attempt.role)
        if within is not None and now >= attempt.asked_at + within:
            continue  # timed out (below): the next rung, not a call to this one
        if attempt.sms_failed:
            due, reason = now, "sms_failed"
        elif ladder.calls_at_once(attempt.asked_at):
            due, reason = attempt.asked_at, "night"
        else:
            due, reason = attempt.asked_at + call_after, "no_sms_answer"
        if now >= due:
            actions.append(CallResponder(attempt.responder_id, attempt.role, reason))
        else:
            deadlines.append(due)


def _unaccepted_steps(
    state: AlertState,
    ladder: Ladder,
    now: datetime,
    actions: list[Action],
    deadlines: list[datetime],
    mark_at_risk: Callable[[str], None],
    ask_county: Callable[[str], None],
) -> None:
    """Nobody has taken it yet: aides one after another, then (or also) the township centre."""
    assert state.respond_by is not None
    respond_by = state.respond_by
    accept_timeout = timedelta(seconds=ladder.accept_timeout_s)
    at_risk_at = clock_started_at(state, ladder) + timedelta(seconds=ladder.at_risk_s)

    aide_attempts = [a for a in state.attempts if a.role == "aide" and a.answer != "superseded"]
    engaged_ids = {a.responder_id for a in state.attempts if a.answer != "superseded"}
    live_aides: list[AttemptState] = []
    for attempt in aide_attempts:
        if attempt.answer != "pending":
            continue
        if now >= attempt.asked_at + accept_timeout:
            actions.append(TimeOutAttempt(attempt.responder_id))
        else:
            live_aides.append(attempt)
            deadlines.append(attempt.asked_at + accept_timeout)

    next_aide = next(
        (c for c in state.ranking if c.role == "aide" and c.responder_id not in engaged_ids),
        None,
    )
    if not live_aides and next_aide is not None and len(aide_attempts) < ladder.max_aides:
        reason = "nearest" if not aide_attempts else "next_aide"
        actions.append(AskResponder(next_aide.responder_id, "aide", reason))
        live_aides.append(
            AttemptState(next_aide.responder_id, "aide", now, "pending", next_aide.eta_minutes)
        )

    def eta_of(attempt: AttemptState) -> float | None:
        if attempt.eta_minutes is not None:
            return attempt.eta_minutes
        return next(
            (c.eta_minutes for c in state.ranking if c.responder_id == attempt.responder_id),
            None,
        )

    # An aide who accepted this instant would arrive at now + ETA. When no asked aide could make
    # it in time, the centre is asked now rather than at T0+8: act before the rule fails.
    # Strictly before the limit: an ETA is an estimate, and at the limit itself the aide would
    # have no margin at all.
    in_time_until = [
        respond_by - timedelta(minutes=eta) for a in live_aides if (eta := eta_of(a)) is not None
    ]
    aide_in_time = any(now < limit for limit in in_time_until)

    centre = next((c for c in state.ranking if c.role == "township_centre"), None)
    centre_attempts = [
        a for a in state.attempts if a.role == "township_centre" and a.answer != "superseded"
    ]
    # A township centre silent for `centre_answer_s` is timed out like an aide, so the county is
    # asked then (below), not only when the 15 minutes are up.
    centre_answer = timedelta(seconds=ladder.centre_answer_s)
    for attempt in centre_attempts:
        if attempt.answer == "pending":
            if now >= attempt.asked_at + centre_answer:
                actions.append(TimeOutAttempt(attempt.responder_id))
            else:
                deadlines.append(attempt.asked_at + centre_answer)
    reason = ""
    if not live_aides:
        reason = "aides_exhausted" if aide_attempts else "no_aide_in_time"
    elif not aide_in_time:
        reason = "no_aide_in_time"
    elif now >= at_risk_at:
        reason = "no_accept"
    if reason:
        mark_at_risk(reason)
        if centre is not None and not centre_attempts:
            actions.append(
                AskResponder(
                    centre.responder_id,
                    "township_centre",
                    "at_risk" if reason == "no_accept" else reason,
                )
            )
        elif centre is None or all(a.answer in _FINISHED for a in centre_attempts):
            # No township centre, or it declined / could not be reached: the county now.
            ask_county("centre_unavailable")
    else:
        deadlines.append(at_risk_at)
        deadlines.extend(limit for limit in in_time_until if limit > now)


def _accepted_steps(
    state: AlertState,
    ladder: Ladder,
    now: datetime,
    actions: list[Action],
    deadlines: list[datetime],
    mark_at_risk: Callable[[str], None],
) -> None:
    """Someone took it: expect them after their travel time, remind them when they are late."""
    assert state.accepted_at is not None and state.respond_by is not None
    if state.accepted_by is None:
        return
    taker = state.accepted_by
    eta = next(
        (
            a.eta_minutes
            for a in state.attempts
            if a.responder_id == taker and a.eta_minutes is not None
        ),
        None,
    )
    if eta is None:  # an operator assigned someone who was never asked: use the ranking
        eta = next((c.eta_minutes for c in state.ranking if c.responder_id == taker), 0.0)
    expected_at = state.accepted_at + timedelta(minutes=eta)
    if expected_at > state.respond_by:
        mark_at_risk("taker_cannot_make_it")
    remind_at = expected_at + timedelta(seconds=ladder.reminder_grace_s)
    if not state.reminder_sent:
        if now >= remind_at:
            actions.append(RemindTaker(taker))
            mark_at_risk("taker_late")
        else:
            deadlines.append(remind_at)
