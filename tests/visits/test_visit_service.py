"""Recording visits in the database (visits/service.py): counted, rejected for the record, a
concern opening an alert with the visit on its timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from alert_service.models import Alert
from anxin.db import transaction
from anxin.models import Responder
from tests import builders
from tests.support.harness import Seeded
from visits import service
from visits.models import RejectReason, Visit, VisitChannel

NOW = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


async def _aides(region: Seeded, village_id: int) -> tuple[Responder, Responder]:
    """The village's owning aide and an aide of another village."""
    async with region.sessions() as session:
        aides = list(
            (
                await session.execute(
                    select(Responder)
                    .where(col(Responder.kind) == "aide")
                    .order_by(col(Responder.id))
                )
            ).scalars()
        )
    own = min((a for a in aides if a.village_id == village_id), key=lambda a: a.id or 0)
    other = next(a for a in aides if a.village_id != village_id)
    return own, other


async def test_a_visit_counts_once_a_day_and_bad_reports_are_kept(region: Seeded) -> None:
    home = await builders.home(region.sessions)
    own, other = await _aides(region, home.elder.village_id)
    code = home.elder.code

    async def visit(**kw: object) -> service.VisitResult:
        async with transaction(region.sessions) as session:
            return await service.record_visit(
                session,
                channel=VisitChannel.sms,
                now=NOW,
                timezone=builders.TZ,
                **kw,  # type: ignore[arg-type]
            )

    first = await visit(elder_code=code.lower(), responder=own)
    again = await visit(elder_code=code, responder=own)
    stranger = await visit(elder_code=code, responder=other)
    unknown = await visit(elder_code="E9999", responder=own)
    future = await visit(elder_code=code, responder=own, visited_at=NOW + timedelta(hours=2))
    assert first.counted and first.reason is None
    assert [r.reason for r in (again, stranger, unknown, future)] == [
        RejectReason.same_day,
        RejectReason.not_assigned,
        RejectReason.unknown_elder,
        RejectReason.future,
    ]
    async with region.sessions() as session:
        rows = list((await session.execute(select(Visit).order_by(col(Visit.id)))).scalars())
    assert [(v.status, v.elder_code) for v in rows] == [
        ("counted", code),
        ("rejected", code),
        ("rejected", code),
        ("rejected", "E9999"),
        ("rejected", code),
    ]


async def test_a_concern_opens_a_p3_alert_with_the_visit_on_its_timeline(region: Seeded) -> None:
    home = await builders.home(region.sessions)
    own, _ = await _aides(region, home.elder.village_id)
    async with transaction(region.sessions) as session:
        result = await service.record_visit(
            session,
            channel=VisitChannel.sms,
            now=NOW,
            timezone=builders.TZ,
            elder_code=home.elder.code,
            responder=own,
            note="异常 摔过一次",
            concern=True,
        )
    assert result.counted and result.alert_id is not None
    alert = await builders.alert(region.sessions, result.alert_id)
    assert (alert.kind, alert.priority, alert.respond_by) == ("visit_concern", 3, None)
    actions = [
        (t.action, t.detail.get("note"))
        for t in await builders.timeline(region.sessions, result.alert_id)
    ]
    assert ("visit", "异常 摔过一次") in actions
    async with region.sessions() as session:
        alerts = list((await session.execute(select(Alert))).scalars())
    assert len(alerts) == 1
