"""Which ladder steps an alert must have had by a given time: the pure ladder
(`alert_service.rules.plan`) replayed on the alert's own ranking and ladder, nobody answering."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alert_service import rules
from alert_service.models import Alert

# --- the oracle: which ladder steps an alert must have had ---------------------------------


@dataclass(frozen=True)
class Step:
    responder_id: int
    role: str
    due_at: datetime


def expected_steps(alert: Alert, until: datetime) -> list[Step]:
    """The call-outs the ladder makes for this alert up to `until` when nobody answers, every
    SMS is delivered and nobody closes it: `rules.plan` replayed on the alert's own ranking and
    ladder snapshot (the same pure function the watcher applies)."""
    ladder = rules.Ladder.from_snapshot(alert.ladder)
    state = rules.AlertState(
        priority=alert.priority,
        status="raised",
        raised_at=alert.raised_at,
        respond_by=alert.respond_by,
        ranking=tuple(
            rules.Candidate(int(c["responder_id"]), str(c["kind"]), float(c["eta_minutes"]))
            for c in alert.ranking
        ),
    )
    steps: list[Step] = []
    now = alert.raised_at
    for _ in range(200):
        decided = rules.plan(state, ladder, now)
        if decided.actions:
            for action in decided.actions:
                state = _apply(state, action, now)
                if isinstance(action, rules.AskResponder):
                    steps.append(Step(action.responder_id, action.role, now))
            continue
        if decided.next_check_at is None or decided.next_check_at > until:
            break
        now = decided.next_check_at
    return steps


def _apply(state: rules.AlertState, action: rules.Action, now: datetime) -> rules.AlertState:
    from dataclasses import replace

    if isinstance(action, rules.AskResponder):
        eta = next(
            (c.eta_minutes for c in state.ranking if c.responder_id == action.responder_id), None
        )
        attempt = rules.AttemptState(action.responder_id, action.role, now, "pending", eta)
        return replace(state, attempts=(*state.attempts, attempt))
    if isinstance(action, rules.TimeOutAttempt):
        return replace(
            state,
            attempts=tuple(
                replace(a, answer="timed_out")
                if a.responder_id == action.responder_id and a.answer == "pending"
                else a
                for a in state.attempts
            ),
        )
    if isinstance(action, rules.MarkAtRisk):
        return replace(state, at_risk=True)
    if isinstance(action, rules.MarkBreached):
        return replace(state, breached=True)
    return state
