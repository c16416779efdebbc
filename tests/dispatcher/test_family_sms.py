"""Issue 20 items 2 and 4 over the wire: a guardian's SMS through the Twilio sandbox (and
Aliyun's SmsUp push) to the signed webhook raises a P1 that runs the ladder, is confirmed, and
a flood joins it; other texts are kept for the operator; the all clear reaches the family when
the alert is resolved; 退订 stops them, 订阅 brings them back."""

from __future__ import annotations

import httpx
from sqlalchemy import select, update
from sqlmodel import col

from alert_service.models import Alert
from anxin.models import AuditLog, Elder
from dispatcher import templates
from dispatcher.models import SmsMessage
from tests.builders import operator_token
from tests.support.aliyun import AliyunBench
from tests.support.dispatch import ELDER, DispatchBench, operator_resolves

DAUGHTER = "+8613700000101"
SON = "+8613700000102"
STRANGER = "+8613999990000"


async def with_family(bench: DispatchBench, *phones: str) -> Elder:
    async with bench.sessions() as session:
        await session.execute(
            update(Elder).where(col(Elder.code) == ELDER).values(guardian_phones=list(phones))
        )
        await session.commit()
    return await bench.elder(ELDER)


async def open_alerts(bench: DispatchBench, elder: Elder) -> list[Alert]:
    async with bench.sessions() as session:
        rows = await session.execute(
            select(Alert).where(col(Alert.elder_id) == elder.id, col(Alert.status) != "resolved")
        )
        return list(rows.scalars())


def bodies(bench: DispatchBench, phone: str) -> list[str]:
    return [m.body for m in bench.sandbox.messages_to(phone)]


async def test_a_guardians_help_text_raises_a_p1_that_runs_the_ladder_and_a_flood_joins_it(
    bench: DispatchBench,
) -> None:
    elder = await with_family(bench, DAUGHTER, SON)
    assert await bench.reply(DAUGHTER, "妈妈摔倒了，救命！") == 200

    (alert,) = await open_alerts(bench, elder)
    assert (alert.priority, alert.source, alert.kind) == (1, "text_in", "sos")
    assert alert.respond_by is not None and alert.ranked_at is not None  # the ladder started
    (aide,) = await bench.asked(alert.id)

    await bench.send_outbox()
    (call_out,) = bodies(bench, aide.phone)
    assert alert.code in call_out and elder.name in call_out
    assert templates.text_alert_sms(joined=False) in bodies(bench, DAUGHTER)
    assert templates.guardian_sms(elder.name, "sos") in bodies(bench, SON)  # the family told

    # A flood from the same number: one alert, every text stored, no second confirmation.
    for body in ("救命啊", "快来", "SOS"):
        assert await bench.reply(DAUGHTER, body) == 200
    await bench.send_outbox()
    (same,) = await open_alerts(bench, elder)
    assert same.id == alert.id and same.trigger_count == 4
    confirmations = [b for b in bodies(bench, DAUGHTER) if "已收到" in b]
    assert confirmations == [templates.text_alert_sms(joined=False)]
    timeline = [e.action for e in await bench.timeline(alert.id)]
    assert timeline.count("text_in") == 4 and timeline.count("triggered_again") == 3

    # Ten minutes on, another help text is confirmed again (as joined).
    bench.clock.advance(600)
    assert await bench.reply(DAUGHTER, "求助") == 200
    await bench.send_outbox()
    assert templates.text_alert_sms(joined=True) in bodies(bench, DAUGHTER)


async def test_a_guardians_reply_goes_on_the_alert_and_every_text_on_the_elders_page(
    bench: DispatchBench,
) -> None:
    elder = await with_family(bench, DAUGHTER, SON)
    alert = await bench.raise_alert(ELDER)
    await bench.send_outbox()
    assert await bench.reply(SON, "我去") == 200
    assert await bench.reply(DAUGHTER, "1") == 200

    lines = [e for e in await bench.timeline(alert.id) if e.action == "family_message"]
    assert [line.detail["text"] for line in lines] == ["我去", "1"]
    assert all(line.actor.startswith("sms:+86137****") for line in lines)
    assert len(await open_alerts(bench, elder)) == 1  # a reply raises nothing

    async with httpx.AsyncClient(base_url=bench.web_url) as http:
        admin = await operator_token(http, "admin")
        got = await http.get(f"/api/elders/{elder.id}/messages", headers=admin)
        assert got.status_code == 200, got.text
        assert [(m["body"], m["alert_id"]) for m in got.json()] == [
            ("1", alert.id),
            ("我去", alert.id),
        ]
        assert (await http.get("/api/elders/999999/messages", headers=admin)).status_code == 404
    async with bench.sessions() as session:
        reads = await session.execute(
            select(AuditLog).where(col(AuditLog.action) == "read_elder_messages")
        )
        assert [r.target_id for r in reads.scalars()] == [str(elder.id)]
    async with httpx.AsyncClient(base_url=bench.web_url) as http:
        assert (await http.get(f"/api/elders/{elder.id}/messages")).status_code == 401


async def test_an_unknown_number_is_stored_and_raises_nothing(bench: DispatchBench) -> None:
    elder = await with_family(bench, DAUGHTER)
    assert await bench.reply(STRANGER, "救命") == 200
    await bench.send_outbox()
    assert await open_alerts(bench, elder) == []
    assert bench.sandbox.messages_to(STRANGER) == []
    async with bench.sessions() as session:
        (stored,) = (
            await session.execute(select(SmsMessage).where(col(SmsMessage.from_phone) == STRANGER))
        ).scalars()
    assert stored.body == "救命" and stored.elder_id is None


async def test_the_all_clear_reaches_the_family_told_and_opting_out_stops_it(
    bench: DispatchBench,
) -> None:
    elder = await with_family(bench, DAUGHTER, SON)
    first = await bench.raise_alert(ELDER)
    await bench.send_outbox()
    await operator_resolves(bench, first.id)
    await bench.send_outbox()
    clear = templates.all_clear_sms(elder.name, "sos", "handled")
    assert "助老员已到场处理" in clear
    assert clear in bodies(bench, DAUGHTER) and clear in bodies(bench, SON)

    # 退订: confirmed, then nothing more to that number (the other guardian still hears).
    assert await bench.reply(DAUGHTER, "退订") == 200
    await bench.send_outbox()
    assert bodies(bench, DAUGHTER)[-1] == templates.family_opt_sms(True)
    heard = len(bodies(bench, DAUGHTER))
    second = await bench.raise_alert(ELDER)
    await bench.send_outbox()
    await operator_resolves(bench, second.id)
    await bench.send_outbox()
    assert len(bodies(bench, DAUGHTER)) == heard
    assert bodies(bench, SON)[-2:] == [templates.guardian_sms(elder.name, "sos"), clear]

    # 订阅: confirmed, and the next alert is told again.
    assert await bench.reply(DAUGHTER, "订阅") == 200
    third = await bench.raise_alert(ELDER)
    await bench.send_outbox()
    assert bodies(bench, DAUGHTER)[heard:] == [
        templates.family_opt_sms(False),
        templates.guardian_sms(elder.name, "sos"),
    ]
    assert third.id not in (first.id, second.id)


async def test_a_guardians_help_text_by_aliyun_sms_up_raises_the_alert_too(
    aliyun_bench: AliyunBench,
) -> None:
    bench = aliyun_bench
    elder = await with_family(bench, DAUGHTER)
    assert await bench.reply(DAUGHTER, "救命") == 200
    (alert,) = await open_alerts(bench, elder)
    assert (alert.priority, alert.source) == (1, "text_in")
    await bench.send_outbox()
    (confirmation,) = [m for m in bench.endpoint.messages_to(DAUGHTER) if "已收到" in m.body]
    assert confirmation.template_code == "ANXIN_TEXTIN_RAISED"
    assert bench.endpoint.refusals == []
