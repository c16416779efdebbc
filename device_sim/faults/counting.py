"""Exact counts after a scenario, from the database and the phones (the sandbox): presses
stored and acked, one alert per home, every ladder step's call-out once (the oracle says
which), duplicates, missing steps, and the delay to the first call-out."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import Alert
from anxin.db import SessionMaker
from device_sim.bench.report import Percentiles
from device_sim.faults.oracle import Step, expected_steps
from device_sim.faults.report import ScenarioResult
from device_sim.faults.state import HomeTrack, SuitePlatform
from gateway.models import Event


async def count_scenario(
    platform: SuitePlatform,
    horizon: timedelta,
    name: str,
    fault_label: str,
    tracks: list[HomeTrack],
    tag: str,
    alerts: dict[str, Alert],
    required: dict[str, list[Step]],
    resolved_at: dict[str, datetime],
    callouts: Counter[tuple[str, str]],
    first_callout: dict[str, float],
    presses: int,
    resends: int,
    wall_s: float,
) -> ScenarioResult:
    """Exact counts from the database and the phones (the sandbox)."""
    devices = [t.device_id for t in tracks]
    async with platform.sessions() as session:
        events = (
            await session.execute(
                select(col(Event.device_id), col(Event.event_id), col(Event.alert_id)).where(
                    col(Event.device_id).in_(devices), col(Event.event_id).like(f"{tag}-%")
                )
            )
        ).all()
        alert_ids = {int(a) for _, _, a in events if a is not None}
        found = list(
            (await session.execute(select(Alert).where(col(Alert.id).in_(alert_ids)))).scalars()
        )
    stored = Counter((d, e) for d, e, _ in events)
    detail: Counter[str] = Counter()
    sent_ids = {(t.device_id, e) for t in tracks for e in t.event_ids}
    detail["presses_not_stored"] = len(sent_ids - set(stored))
    detail["presses_stored_twice"] = sum(n - 1 for n in stored.values())
    detail["presses_unacked"] = sum(len(t.event_ids) - len(t.acked) for t in tracks)
    detail["presses_without_alert"] = sum(1 for _, _, a in events if a is None)
    alerts_of_home: dict[str, set[int]] = defaultdict(set)
    for d, _, a in events:
        if a is not None:
            alerts_of_home[d].add(int(a))
    detail["homes_without_alert"] = sum(1 for t in tracks if not alerts_of_home[t.device_id])
    detail["extra_alerts"] = sum(max(0, len(s) - 1) for s in alerts_of_home.values())
    linked = Counter(int(a) for _, _, a in events if a is not None)
    # Each press joins its alert once: an alert's trigger count is the presses linked to it.
    detail["trigger_count_over"] = sum(
        max(0, a.trigger_count - linked[int(a.id or 0)]) for a in found
    )
    detail["trigger_count_under"] = sum(
        max(0, linked[int(a.id or 0)] - a.trigger_count) for a in found
    )

    # The ladder steps: every required step seen once, nothing the ladder would not send.
    steps_expected = steps_seen = 0
    horizon_extra = timedelta(seconds=1)
    phone_to_responder = {p: r for r, p in platform.phone_of.items()}
    examples: list[str] = []
    for alert in found:
        code = alert.code
        must = required.get(code) or expected_steps(alert, alert.raised_at + horizon)
        # The ladder stops when the operator confirms a taker (or closes the alert).
        closed = alert.accepted_at or alert.resolved_at or resolved_at.get(code) or alert.raised_at
        may = {s.responder_id for s in expected_steps(alert, closed + horizon_extra)}
        steps_expected += len(must)
        for step in must:
            n = callouts[(code, platform.phone_of.get(step.responder_id, ""))]
            steps_seen += min(n, 1)
            if n == 0:
                detail["steps_missing"] += 1
        for (c, phone), n in callouts.items():
            if c != code:
                continue
            if n > 1:
                detail["callouts_sent_twice"] += n - 1
            if phone_to_responder.get(phone) not in may:
                detail["callouts_unexpected"] += n
                if len(examples) < 3:
                    examples.append(
                        f"{code}: call-out to responder {phone_to_responder.get(phone)} "
                        f"({n}×), raised {alert.raised_at:%H:%M:%S.%f}, confirmed "
                        f"{alert.accepted_at and f'{alert.accepted_at:%H:%M:%S.%f}'}, ladder "
                        f"by then: {[(s.responder_id, s.role, f'{s.due_at:%S.%f}') for s in expected_steps(alert, closed + horizon_extra)]}"
                    )
    if examples:
        examples = await explain(platform.sessions, examples)
    delays = [
        first_callout[c] - t.first_send
        for t in tracks
        for c in t.alert_codes
        if c in first_callout and t.first_send is not None
    ]
    missing = (
        detail["presses_not_stored"]
        + detail["presses_unacked"]
        + detail["presses_without_alert"]
        + detail["homes_without_alert"]
        + detail["trigger_count_under"]
        + detail["steps_missing"]
    )
    duplicates = (
        detail["presses_stored_twice"]
        + detail["extra_alerts"]
        + detail["trigger_count_over"]
        + detail["callouts_sent_twice"]
        + detail["callouts_unexpected"]
    )
    return ScenarioResult(
        scenario=name,
        fault=fault_label,
        messages_sent=presses,
        resends=resends,
        alerts_expected=len(tracks),
        alerts_found=len(found),
        duplicates=duplicates,
        missing=missing,
        max_delay_s=round(max(delays), 2) if delays else None,
        sos_to_callout=Percentiles.of(delays),
        steps_expected=steps_expected,
        steps_seen=steps_seen,
        wall_s=round(wall_s, 1),
        detail={k: v for k, v in detail.items() if v},
        notes=examples,
    )


async def other_alerts(sessions: SessionMaker, since: datetime) -> dict[str, int]:
    """Alerts that are not the homes' SOS (a device taken for offline in a restart, say)."""
    async with sessions() as session:
        rows = await session.execute(
            select(col(Alert.kind), func.count())
            .where(col(Alert.raised_at) >= since, col(Alert.kind) != "sos")
            .group_by(col(Alert.kind))
        )
        return {str(kind): int(n) for kind, n in rows}


async def explain(sessions: SessionMaker, examples: list[str]) -> list[str]:
    """For an unexpected call-out: what the platform recorded (attempts and timeline)."""
    from alert_service.models import AlertTimelineEntry, DispatchAttempt

    out: list[str] = []
    async with sessions() as session:
        for example in examples:
            alert_id = int(example.split(":", 1)[0][1:])
            attempts = (
                await session.execute(
                    select(DispatchAttempt)
                    .where(col(DispatchAttempt.alert_id) == alert_id)
                    .order_by(col(DispatchAttempt.step))
                )
            ).scalars()
            timeline = (
                await session.execute(
                    select(AlertTimelineEntry)
                    .where(col(AlertTimelineEntry.alert_id) == alert_id)
                    .order_by(col(AlertTimelineEntry.id))
                )
            ).scalars()
            out.append(
                example
                + "; attempts: "
                + str(
                    [
                        (a.step, a.responder_id, a.role, f"{a.asked_at:%S.%f}", a.answer)
                        for a in attempts
                    ]
                )
                + "; timeline: "
                + str(
                    [
                        (f"{e.at:%S}", e.action, e.detail)
                        for e in timeline
                        if e.action != "triggered_again"
                    ]
                )
            )
    return out
