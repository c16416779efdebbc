"""改派给 (reassign) through real parts: the operator's POST over HTTP to the running app, the
SMS through the real `twilio` client to the project's Twilio-compatible endpoint, the aides'
replies back through the signed webhook. The chosen aide is asked, the earlier request is
withdrawn, and a late "1" from the first aide does not take the alert."""

from __future__ import annotations

from typing import Any

from alert_service.models import Alert
from dispatcher import templates
from tests.support.dispatch import DispatchBench

ELDER = "E0001"


async def operator_headers(bench: DispatchBench) -> dict[str, str]:
    res = await bench.http.post(
        bench.web_url + "/api/auth/token",
        data={"username": "county", "password": "anxin-county"},
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def other_aide(alert: Alert, *not_these: int | None) -> int:
    return next(
        int(c["responder_id"])
        for c in alert.ranking
        if c["kind"] == "aide" and c["responder_id"] not in not_these
    )


async def reassign(bench: DispatchBench, alert: Alert, responder_id: int | None) -> dict[str, Any]:
    res = await bench.http.post(
        f"{bench.web_url}/api/alerts/{alert.id}/reassign",
        headers=await operator_headers(bench),
        json={"responder_id": responder_id},
    )
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


def texts_to(bench: DispatchBench, phone: str) -> list[str]:
    return [m.body for m in bench.sandbox.messages_to(phone)]


async def test_reassign_asks_the_chosen_aide_and_withdraws_the_first_request(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    first = (await bench.asked(alert.id))[0]
    await bench.send_outbox()
    assert "回1接单" in texts_to(bench, first.phone)[-1]
    chosen = await bench.responder(other_aide(alert, first.id))

    bench.clock.advance(40)
    assert (await reassign(bench, alert, chosen.id))["status"] == "dispatching"
    await bench.send_outbox()

    # The chosen aide gets the call-out; the first aide is told to stand down.
    call_out = texts_to(bench, chosen.phone)
    assert len(call_out) == 1 and alert.code in call_out[0] and "回1接单" in call_out[0]
    withdrawn = templates.reassigned_sms(alert.code, first.lang)
    assert withdrawn.endswith("已改派他人，无需前往。")
    assert texts_to(bench, first.phone)[-1] == withdrawn
    answers = {a.responder_id: a.answer for a in await bench.attempts(alert.id)}
    assert answers == {first.id: "withdrawn", chosen.id: "pending"}
    timeline = [
        (e.actor, e.action, e.detail.get("responder_id")) for e in await bench.timeline(alert.id)
    ]
    assert ("operator:county", "withdrawn", first.id) in timeline
    assert ("operator:county", "asked", chosen.id) in timeline

    # A late "1" from the first aide does not take it: he hears it went to someone else.
    assert await bench.reply(first.phone, "1") == 200
    still = await bench.alert(alert.id)
    assert (still.status, still.accepted_by) == ("dispatching", None)
    await bench.send_outbox()
    assert texts_to(bench, first.phone)[-1] == withdrawn

    # The chosen aide takes it; the first aide, already stood down, gets no second SMS.
    told_first = len(texts_to(bench, first.phone))
    assert await bench.reply(chosen.phone, "1") == 200
    taken = await bench.alert(alert.id)
    assert (taken.status, taken.accepted_by) == ("accepted", chosen.id)
    await bench.send_outbox()
    assert len(texts_to(bench, first.phone)) == told_first


async def test_reassign_away_from_the_taker_tells_him_and_his_late_arrival_changes_nothing(
    bench: DispatchBench,
) -> None:
    alert = await bench.raise_alert(ELDER)
    first = (await bench.asked(alert.id))[0]
    assert await bench.reply(first.phone, "1") == 200
    assert (await bench.alert(alert.id)).accepted_by == first.id
    chosen = await bench.responder(other_aide(alert, first.id))

    bench.clock.advance(60)
    await reassign(bench, alert, chosen.id)
    await bench.send_outbox()
    assert texts_to(bench, first.phone)[-1] == templates.reassigned_sms(alert.code, first.lang)
    assert alert.code in texts_to(bench, chosen.phone)[-1]

    # "2" (arrived) from the released taker neither takes the alert nor puts it on scene.
    assert await bench.reply(first.phone, "2") == 200
    after = await bench.alert(alert.id)
    assert (after.status, after.accepted_by, after.on_scene_at) == ("dispatching", None, None)
    await bench.send_outbox()
    assert texts_to(bench, first.phone)[-1] == templates.reassigned_sms(alert.code, first.lang)
