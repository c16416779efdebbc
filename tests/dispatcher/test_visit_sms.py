"""An aide's visit report by SMS (`访 E0001 [异常 …]`) through real parts: the aide's phone
texts the Twilio-compatible endpoint, which posts the signed webhook to the running app; the
answer goes out through the outbox and the real `twilio` client. Each bad report gets a clear
Chinese answer, is kept for the record and counts nowhere."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from anxin.models import Responder
from tests.support.dispatch import DispatchBench
from visits.models import Visit

ELDER = "E0001"


async def aides(bench: DispatchBench) -> tuple[Responder, Responder]:
    """E0001's owner (its village's first aide) and an aide of another village."""
    elder = await bench.elder(ELDER)
    async with bench.sessions() as session:
        found = list(
            (
                await session.execute(
                    select(Responder)
                    .where(col(Responder.kind) == "aide")
                    .order_by(col(Responder.id))
                )
            ).scalars()
        )
    own = next(a for a in found if a.village_id == elder.village_id)
    other = next(a for a in found if a.village_id != elder.village_id)
    return own, other


async def answer(bench: DispatchBench, phone: str, body: str) -> str:
    """Text the platform, send what it queued, and read the answer the phone got."""
    before = len(bench.sandbox.messages_to(phone))
    assert await bench.reply(phone, body) == 200
    await bench.send_outbox()
    got = bench.sandbox.messages_to(phone)
    assert len(got) == before + 1, [m.body for m in got]
    return got[-1].body


async def visits(bench: DispatchBench) -> list[tuple[str, str | None, str, bool]]:
    async with bench.sessions() as session:
        rows = await session.execute(select(Visit).order_by(col(Visit.id)))
        return [
            (v.status, v.reject_reason, v.elder_code, v.sms_id is not None) for v in rows.scalars()
        ]


async def test_a_visit_by_sms_is_counted_once_and_bad_ones_are_answered_and_kept(
    bench: DispatchBench,
) -> None:
    own, other = await aides(bench)
    assert "已记录" in await answer(bench, own.phone, "访 e0001")
    assert "今天已记录过探访" in await answer(bench, own.phone, "访 E0001。")
    assert "不是您负责探访" in await answer(bench, other.phone, f"访 {ELDER}")
    assert "没有编号为E9999的老人" in await answer(bench, own.phone, "访 E9999")
    assert "访 老人编号" in await answer(bench, own.phone, "访")
    assert await visits(bench) == [
        ("counted", None, ELDER, True),
        ("rejected", "same_day", ELDER, True),
        ("rejected", "not_assigned", ELDER, True),
        ("rejected", "unknown_elder", "E9999", True),
    ]


async def test_an_explicit_owner_is_the_one_whose_visit_counts(bench: DispatchBench) -> None:
    """The operator makes another aide of the village the owner (PUT /api/elders/{id}/visit-owner):
    from then on that aide's 访 counts and the village's first aide's does not."""
    own, _ = await aides(bench)
    elder = await bench.elder(ELDER)
    async with bench.sessions() as session:
        second = (
            (
                await session.execute(
                    select(Responder).where(
                        col(Responder.village_id) == elder.village_id,
                        col(Responder.kind) == "aide",
                        col(Responder.id) != own.id,
                    )
                )
            )
            .scalars()
            .first()
        )
    assert second is not None, "the demo village has two aides"
    login = await bench.http.post(
        bench.web_url + "/api/auth/token", data={"username": "county", "password": "anxin-county"}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    res = await bench.http.put(
        f"{bench.web_url}/api/elders/{elder.id}/visit-owner",
        headers=headers,
        json={"responder_id": second.id},
    )
    assert res.status_code == 200 and res.json()["owner_id"] == second.id, res.text
    assert "不是您负责探访" in await answer(bench, own.phone, f"访 {ELDER}")
    assert "已记录" in await answer(bench, second.phone, f"访 {ELDER}")


async def test_a_concern_found_on_a_visit_opens_an_alert_with_the_visit_in_its_timeline(
    bench: DispatchBench,
) -> None:
    own, _ = await aides(bench)
    bench.clock.advance(timedelta(days=1))
    text = await answer(bench, own.phone, "访 E0001 异常 摔过一次")
    assert "已记录" in text and "异常已转值班员跟进" in text
    async with bench.sessions() as session:
        visit = (await session.execute(select(Visit))).scalars().one()
    assert visit.status == "counted" and visit.concern and visit.alert_id is not None
    alert = await bench.alert(visit.alert_id)
    assert (alert.kind, alert.priority, alert.status) == ("visit_concern", 3, "raised")
    assert f"A{alert.id}" in text
    entries = [(t.action, t.detail.get("note")) for t in await bench.timeline(alert.id)]
    assert entries[0][0] == "raised" and ("visit", "异常 摔过一次") in entries


async def test_an_urgent_concern_runs_the_ladder(bench: DispatchBench) -> None:
    own, _ = await aides(bench)
    await answer(bench, own.phone, "访 E0001 紧急 叫不醒")
    async with bench.sessions() as session:
        visit = (await session.execute(select(Visit))).scalars().one()
    alert = await bench.alert(visit.alert_id)
    assert (alert.kind, alert.priority) == ("visit_concern", 2)
    assert alert.respond_by is not None and await bench.attempts(alert.id)
