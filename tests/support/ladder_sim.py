"""A pure model of how the service applies ladder actions, to drive `rules.plan` through time.

The service does the same against the database; here the state is a frozen dataclass, so
table-driven tests can run a whole 15 minutes in microseconds and compare two ways of
driving it (every second, or only at `next_check_at`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from alert_service import rules

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def ranking(
    *aide_etas: float, centre: float | None = 12, county: float | None = 25
) -> tuple[rules.Candidate, ...]:
    """Aides 101, 102, … with the given ETAs (minutes), then township centre 201, county 301."""
    lines = [rules.Candidate(101 + i, "aide", eta) for i, eta in enumerate(aide_etas)]
    if centre is not None:
        lines.append(rules.Candidate(201, "township_centre", centre))
    if county is not None:
        lines.append(rules.Candidate(301, "county_centre", county))
    return tuple(lines)


def new_alert(
    lines: tuple[rules.Candidate, ...], *, window: timedelta = timedelta(minutes=15)
) -> rules.AlertState:
    return rules.AlertState(
        priority=1, status="raised", raised_at=T0, respond_by=T0 + window, ranking=lines
    )


def _answer(
    state: rules.AlertState, responder_id: int, answer: str, now: datetime
) -> tuple[rules.AttemptState, ...]:
    del now
    return tuple(
        replace(a, answer=answer) if a.responder_id == responder_id and a.answer == "pending" else a
        for a in state.attempts
    )


def apply(state: rules.AlertState, action: rules.Action, now: datetime) -> rules.AlertState:
    if isinstance(action, rules.AskResponder):
        eta = next(c.eta_minutes for c in state.ranking if c.responder_id == action.responder_id)
        attempt = rules.AttemptState(action.responder_id, action.role, now, "pending", eta)
        status = "dispatching" if state.status == "raised" else state.status
        return replace(state, attempts=(*state.attempts, attempt), status=status)
    if isinstance(action, rules.CallResponder):
        called = tuple(
            replace(a, called=True)
            if a.responder_id == action.responder_id and a.answer == "pending"
            else a
            for a in state.attempts
        )
        return replace(state, attempts=called)
    if isinstance(action, rules.TimeOutAttempt):
        return replace(state, attempts=_answer(state, action.responder_id, "timed_out", now))
    if isinstance(action, rules.MarkAtRisk):
        return replace(state, at_risk=True)
    if isinstance(action, rules.MarkBreached):
        return replace(state, breached=True)
    if isinstance(action, rules.RemindTaker):
        return replace(state, reminder_sent=True)
    raise AssertionError(action)


def respond(
    state: rules.AlertState, responder_id: int, reply: str, now: datetime
) -> rules.AlertState:
    """What a person does: accept, decline, failed (SMS, or a call unanswered), sms_failed (an
    SMS that failed when the ladder calls), on_scene, withdraw (0 after accept)."""
    if reply == "accept":
        attempts = tuple(
            replace(a, answer="accepted")
            if a.responder_id == responder_id and a.answer == "pending"
            else replace(a, answer="superseded")
            if a.answer == "pending"
            else a
            for a in state.attempts
        )
        return replace(
            state,
            accepted_at=now,
            accepted_by=responder_id,
            status="accepted",
            attempts=attempts,
        )
    if reply == "sms_failed":  # the call-out SMS failed with voice on: called next, at once
        flagged = tuple(
            replace(a, sms_failed=True)
            if a.responder_id == responder_id and a.answer == "pending"
            else a
            for a in state.attempts
        )
        return replace(state, attempts=flagged)
    if reply in ("decline", "failed"):
        answer = "declined" if reply == "decline" else "failed"
        return replace(state, attempts=_answer(state, responder_id, answer, now))
    if reply == "withdraw":
        attempts = tuple(
            replace(a, answer="declined")
            if a.responder_id == responder_id and a.answer == "accepted"
            else a
            for a in state.attempts
        )
        return replace(
            state,
            accepted_at=None,
            accepted_by=None,
            status="dispatching",
            reminder_sent=False,
            attempts=attempts,
        )
    if reply == "on_scene":
        return replace(state, on_scene_at=now, status="on_scene")
    raise AssertionError(reply)


def settle(
    state: rules.AlertState, ladder: rules.Ladder, now: datetime
) -> tuple[rules.AlertState, list[rules.Action], datetime | None]:
    """Plan and apply until nothing is due, as `service.advance` does."""
    done: list[rules.Action] = []
    for _ in range(10):
        decided = rules.plan(state, ladder, now)
        if not decided.actions:
            return state, done, decided.next_check_at
        for action in decided.actions:
            state = apply(state, action, now)
            done.append(action)
    raise AssertionError("the ladder did not settle")


@dataclass(frozen=True)
class Reply:
    at: datetime
    responder_id: int
    reply: str


Log = list[tuple[timedelta, rules.Action]]


def drive(
    state: rules.AlertState,
    ladder: rules.Ladder,
    replies: list[Reply],
    *,
    until: datetime,
    every_second: bool,
) -> tuple[rules.AlertState, Log]:
    """Run the ladder to `until`: either looking every second, or only when the plan said
    (`next_check_at`) and when someone replies — what the watcher and the reply handler do."""
    log: Log = []
    pending = sorted(replies, key=lambda r: r.at)
    now = state.raised_at
    while now <= until:
        while pending and pending[0].at <= now:
            reply = pending.pop(0)
            state = respond(state, reply.responder_id, reply.reply, reply.at)
        state, done, next_check = settle(state, ladder, now)
        log.extend((now - state.raised_at, action) for action in done)
        if every_second:
            now += timedelta(seconds=1)
            continue
        wake = [t for t in (next_check, pending[0].at if pending else None) if t is not None]
        if not wake:
            break
        now = min(wake)
    return state, log
