"""What a played scenario left behind, checked against its `expect:` list: the device acks,
then each expected alert, alert count and event count, read from the database. A failed alert
check brings the alert's timeline along, so a failure says what happened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col

from alert_service.models import Alert, AlertTimelineEntry, DispatchAttempt
from anxin.db import SessionMaker
from anxin.models import Elder, Region
from device_sim.homes import AckResult
from device_sim.region.plan import RegionPlan
from device_sim.scenario.model import Expectation, Scenario, Step, format_seconds
from dispatcher.models import SmsMessage, VoiceCall
from gateway.models import Event

# --- results --------------------------------------------------------------------------------


@dataclass
class Check:
    subject: str
    what: str
    expected: str
    actual: str
    passed: bool


@dataclass
class ScenarioResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    mode: str = "scenario time"
    real_seconds: float = 0.0
    acks: list[str] = field(default_factory=list)
    # The timeline of every alert with a failed check, so a failure says what happened.
    timelines: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


@dataclass
class OutcomeCheck:
    """One look at the database after (or while) a scenario plays."""

    scenario: Scenario
    sessions: SessionMaker
    t0: datetime
    on_scenario_time: bool
    acks: list[tuple[Step, AckResult]]
    # alert code → monotonic time of its event / of its first call-out SMS
    first_send_real: dict[str, float]
    first_callout_real: dict[str, float]
    # Shared with the player: the timelines of alerts with a failed check.
    timelines: list[str]
    # For `visits:` and `coverage:`: the seeded operators, and the platform's HTTP API.
    plan: RegionPlan | None = None
    web_url: str | None = None

    async def run(self) -> ScenarioResult:
        result = ScenarioResult(self.scenario.name)
        for step, ack in self.acks:
            result.acks.append(
                f"{format_seconds(step.at)} {step.home} {step.event}: {ack.status} {ack.alert_id or ''}"
            )
            if step.expect_ack is not None:
                result.checks.append(
                    Check(
                        f"{step.home} {step.event} at {format_seconds(step.at)}",
                        "device ack",
                        step.expect_ack,
                        ack.status,
                        ack.status == step.expect_ack,
                    )
                )
        async with self.sessions() as session:
            rows = await session.execute(
                select(col(Elder.code), col(Elder.id)).where(
                    col(Elder.code).in_(list(self.scenario.homes.values()))
                )
            )
            elders = {code: elder_id for code, elder_id in rows if elder_id is not None}
            for exp in self.scenario.expect:
                if exp.alert is not None:
                    result.checks.extend(await self._check_alert(session, exp, elders))
                elif exp.alerts is not None:
                    result.checks.append(await self._check_alert_count(session, exp, elders))
                elif exp.events is not None:
                    result.checks.append(await self._check_event_count(session, exp, elders))
        for exp in self.scenario.expect:
            if exp.visits is not None:
                result.checks.extend(await self._check_visits(exp))
            elif exp.coverage is not None:
                result.checks.extend(await self._check_coverage(exp))
        result.timelines = self.timelines
        return result

    async def _alerts_of(self, session: Any, elder_id: int | None, kind: str) -> list[Alert]:
        rows = await session.execute(
            select(Alert)
            .where(
                col(Alert.elder_id) == elder_id,
                col(Alert.kind) == kind,
                col(Alert.raised_at) >= self.t0,
            )
            .order_by(col(Alert.id))
        )
        return list(rows.scalars())

    async def _check_calls(
        self,
        session: Any,
        exp: Expectation,
        alert: Alert,
        labels: dict[int, str],
        add: Callable[..., None],
    ) -> None:
        """Call-out calls per responder and the key each pressed (issue 19)."""
        placed = (
            await session.execute(
                select(VoiceCall)
                .where(col(VoiceCall.alert_id) == alert.id)
                .order_by(col(VoiceCall.id))
            )
        ).scalars()
        per_call: dict[str, int] = {}
        keys: dict[str, str] = {}
        for call in placed:
            label = labels.get(call.responder_id or -1, f"responder {call.responder_id}")
            per_call[label] = per_call.get(label, 0) + 1
            keys[label] = call.digits or ("none" if call.answered_at else call.status)
        if exp.calls is not None:
            add("calls per responder", exp.calls, {k: per_call.get(k, 0) for k in exp.calls})
        if exp.call_keys is not None:
            add("key pressed", exp.call_keys, {k: keys.get(k, "-") for k in exp.call_keys})

    async def _check_alert(
        self, session: Any, exp: Expectation, elders: dict[str, int]
    ) -> list[Check]:
        assert exp.alert is not None
        sel = exp.alert
        subject = f"{sel.home} {sel.kind}" + (f" #{sel.nth}" if sel.nth > 1 else "")
        found = await self._alerts_of(session, elders.get(self.scenario.homes[sel.home]), sel.kind)
        if len(found) < sel.nth:
            return [Check(subject, "alert raised", "yes", f"{len(found)} such alerts", False)]
        alert = found[sel.nth - 1]
        subject += f" ({alert.code})"
        labels = responder_labels(alert)
        checks: list[Check] = []

        def add(what: str, expected: Any, actual: Any, passed: bool | None = None) -> None:
            ok = (expected == actual) if passed is None else passed
            checks.append(Check(subject, what, str(expected), str(actual), ok))

        for name in (
            "priority",
            "status",
            "trigger_count",
            "call_120",
            "cancel_requested",
            "breached",
            "at_risk",
        ):
            expected = getattr(exp, name)
            if expected is not None:
                add(name, expected, getattr(alert, name))
        if exp.met is not None:
            met = (
                alert.on_scene_at is not None
                and alert.respond_by is not None
                and alert.on_scene_at <= alert.respond_by
            )
            add("met (on scene by respond_by)", exp.met, met)
        if exp.raised_at is not None:
            at = (alert.raised_at - self.t0).total_seconds()
            tolerance = 2.0 if self.on_scenario_time else 5.0
            add(
                "raised at",
                format_seconds(exp.raised_at),
                format_seconds(at),
                abs(at - exp.raised_at) <= tolerance,
            )
        if exp.on_scene_within is not None:
            took = (
                None
                if alert.on_scene_at is None
                else (alert.on_scene_at - alert.raised_at).total_seconds()
            )
            add(
                "on scene within",
                format_seconds(exp.on_scene_within),
                "never" if took is None else format_seconds(took),
                took is not None and took <= exp.on_scene_within,
            )
        if exp.asked is not None or exp.accepted_by is not None:
            attempts = (
                await session.execute(
                    select(DispatchAttempt)
                    .where(col(DispatchAttempt.alert_id) == alert.id)
                    .order_by(col(DispatchAttempt.step))
                )
            ).scalars()
            asked = [labels.get(a.responder_id, f"responder {a.responder_id}") for a in attempts]
            if exp.asked is not None:
                add("asked, in order", exp.asked, asked)
        if exp.accepted_by is not None:
            taker = (
                labels.get(alert.accepted_by, str(alert.accepted_by)) if alert.accepted_by else None
            )
            add("accepted by", exp.accepted_by, taker)
        if exp.sms is not None:
            rows = await session.execute(
                select(col(SmsMessage.responder_id), col(SmsMessage.purpose), func.count())
                .where(col(SmsMessage.alert_id) == alert.id, col(SmsMessage.direction) == "out")
                .group_by(col(SmsMessage.responder_id), col(SmsMessage.purpose))
            )
            per_label: dict[str, int] = {}
            for responder_id, purpose, n in rows:
                label = (
                    "guardians"
                    if purpose == "guardian"
                    else labels.get(responder_id or -1, f"responder {responder_id}")
                )
                per_label[label] = per_label.get(label, 0) + int(n)
            actual = {k: per_label.get(k, 0) for k in exp.sms}
            add("SMS per responder", exp.sms, actual)
        if exp.calls is not None or exp.call_keys is not None:
            await self._check_calls(session, exp, alert, labels, add)
        if exp.timeline_has is not None:
            actions = set(
                (
                    await session.execute(
                        select(col(AlertTimelineEntry.action)).where(
                            col(AlertTimelineEntry.alert_id) == alert.id
                        )
                    )
                ).scalars()
            )
            add(
                "timeline has",
                exp.timeline_has,
                [a for a in exp.timeline_has if a in actions],
            )
        if exp.sms_within_real_s is not None:
            sent = self.first_send_real.get(alert.code)
            got = self.first_callout_real.get(alert.code)
            took = None if sent is None or got is None else got - sent
            add(
                "call-out SMS requested within (real s)",
                exp.sms_within_real_s,
                "never" if took is None else f"{took:.2f}",
                took is not None and took <= exp.sms_within_real_s,
            )
        if not all(c.passed for c in checks):
            self.timelines.extend(await self._timeline_of(session, alert, subject, labels))
        return checks

    async def _timeline_of(
        self, session: Any, alert: Alert, subject: str, labels: dict[int, str]
    ) -> list[str]:
        entries = (
            await session.execute(
                select(AlertTimelineEntry)
                .where(col(AlertTimelineEntry.alert_id) == alert.id)
                .order_by(col(AlertTimelineEntry.at), col(AlertTimelineEntry.id))
            )
        ).scalars()
        lines = [f"timeline of {subject}:"]
        for entry in entries:
            detail = dict(entry.detail)
            if (rid := detail.get("responder_id")) is not None:
                detail["responder"] = labels.get(int(rid), str(rid))
                del detail["responder_id"]
            at = format_seconds((entry.at - self.t0).total_seconds())
            lines.append(f"  {at:>8} {entry.actor:<16} {entry.action:<14} {detail}")
        return lines

    # -- over the API, as an operator ----------------------------------------------------------
    async def _api_get(self, operator: str, path: str, params: dict[str, str]) -> Any:
        """GET an operator's API page: log in as the seeded operator, read, return the JSON."""
        if self.web_url is None or self.plan is None:
            raise RuntimeError("`visits:` and `coverage:` checks need the platform's HTTP API")
        password = next(o.password for o in self.plan.operators if o.username == operator)
        async with httpx.AsyncClient(base_url=self.web_url, timeout=30.0) as http:
            token = await http.post(
                "/api/auth/token", data={"username": operator, "password": password}
            )
            token.raise_for_status()
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            response = await http.get(path, params=params, headers=headers)
            response.raise_for_status()
            return response.json()

    def _label(self, elder_code: str) -> str:
        return next((k for k, v in self.scenario.homes.items() if v == elder_code), elder_code)

    async def _check_visits(self, exp: Expectation) -> list[Check]:
        view = exp.visits
        assert view is not None
        subject = f"visits {view.month} {view.region} (as {view.operator})"
        rows = await self._api_get(
            view.operator, "/api/figures/visits", {"month": view.month, "region": view.region}
        )
        row = next((r for r in rows if r["code"] == view.region), None)
        if row is None:
            return [Check(subject, "region's row", "present", "no visits due", False)]
        checks = [
            Check(subject, name, str(wanted), str(row[name]), wanted == row[name])
            for name, wanted in (
                ("due", exp.due),
                ("visited", exp.visited),
                ("pending", exp.pending),
            )
            if wanted is not None
        ]
        if exp.rate is not None:
            got = row["rate"]
            ok = got is not None and round(got, 3) == round(exp.rate, 3)
            checks.append(Check(subject, "rate (visited ÷ due)", f"{exp.rate:.3f}", str(got), ok))
        if exp.missed is not None:
            # A township's or the county's row lists no one: its villages' rows do.
            missed = [m for r in rows if r["level"] == "village" for m in r["missed"]]
            got_missed = {
                self._label(m["elder_code"]): m["reason"]
                for m in missed
                if m["village_id"] in {r["region_id"] for r in rows}
            }
            checks.append(
                Check(
                    subject,
                    "missed (who: why)",
                    str(dict(sorted(exp.missed.items()))),
                    str(dict(sorted(got_missed.items()))),
                    got_missed == exp.missed,
                )
            )
        return checks

    async def _check_coverage(self, exp: Expectation) -> list[Check]:
        view = exp.coverage
        assert view is not None
        subject = f"coverage (as {view.operator})"
        body = await self._api_get(view.operator, "/api/figures/coverage", {})
        checks: list[Check] = []
        if exp.villages_without_aide is not None:
            got = sorted(v["village"] for v in body["villages_without_aide"])
            wanted = sorted(exp.villages_without_aide)
            checks.append(
                Check(
                    subject, "villages with no aide on duty", str(wanted), str(got), got == wanted
                )
            )
        if exp.uncovered_include is not None:
            uncovered = {e["code"] for e in body["uncovered"]}
            wanted = sorted(exp.uncovered_include)
            got = [h for h in wanted if self.scenario.homes[h] in uncovered]
            checks.append(
                Check(subject, "among the uncovered", str(wanted), str(got), got == wanted)
            )
        if exp.warnings is not None:
            warned = [
                f"{w['detail'].get('responder')}: {w['detail'].get('villages_without_aide')}"
                for w in body["warnings"]
            ]
            checks.append(
                Check(
                    subject,
                    "下班 warnings",
                    str(exp.warnings),
                    f"{len(warned)} {warned}" if warned else "0",
                    len(warned) == exp.warnings,
                )
            )
        return checks

    def _count_check(self, subject: str, exp: Expectation, n: int) -> Check:
        parts = []
        ok = True
        if exp.count is not None:
            parts.append(f"= {exp.count}")
            ok &= n == exp.count
        if exp.at_least is not None:
            parts.append(f"≥ {exp.at_least}")
            ok &= n >= exp.at_least
        if exp.at_most is not None:
            parts.append(f"≤ {exp.at_most}")
            ok &= n <= exp.at_most
        return Check(subject, "how many", " and ".join(parts), str(n), ok)

    async def _check_alert_count(
        self, session: Any, exp: Expectation, elders: dict[str, int]
    ) -> Check:
        f = exp.alerts
        assert f is not None
        query = select(func.count()).select_from(Alert).where(col(Alert.raised_at) >= self.t0)
        bits = []
        if f.kind is not None:
            query = query.where(col(Alert.kind) == f.kind)
            bits.append(f.kind)
        if f.priority is not None:
            query = query.where(col(Alert.priority) == f.priority)
            bits.append(f"P{f.priority}")
        if f.home is not None:
            query = query.where(col(Alert.elder_id) == elders.get(self.scenario.homes[f.home]))
            bits.append(f.home)
        if f.township is not None:
            township_id = await session.scalar(
                select(col(Region.id)).where(col(Region.code) == f.township)
            )
            query = query.where(col(Alert.township_id) == township_id)
            bits.append(f"in {f.township}")
        n = int(await session.scalar(query) or 0)
        return self._count_check("alerts " + " ".join(bits or ["(all)"]), exp, n)

    async def _check_event_count(
        self, session: Any, exp: Expectation, elders: dict[str, int]
    ) -> Check:
        f = exp.events
        assert f is not None
        query = (
            select(func.count())
            .select_from(Event)
            .where(
                col(Event.elder_id) == elders.get(self.scenario.homes[f.home]),
                col(Event.received_at) >= self.t0,
            )
        )
        if f.type is not None:
            query = query.where(col(Event.type) == f.type.value)
        n = int(await session.scalar(query) or 0)
        return self._count_check(f"events stored {f.home} {f.type.value if f.type else ''}", exp, n)


def responder_labels(alert: Alert) -> dict[int, str]:
    """Responder id → label as a scenario names it: aide1 is the alert's nearest aide, and so
    on down its ranking; the township and county centres' duty phones."""
    labels: dict[int, str] = {}
    aides = 0
    for line in alert.ranking or []:
        kind = str(line.get("kind"))
        responder_id = int(line["responder_id"])
        if kind == "aide":
            aides += 1
            labels[responder_id] = f"aide{aides}"
        elif kind == "township_centre":
            labels[responder_id] = "township"
        elif kind == "county_centre":
            labels[responder_id] = "county"
    return labels
