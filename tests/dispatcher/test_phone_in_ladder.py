"""A phone-in alert (代报警, issue 20 item 1) escalates exactly like a device one: the same elder,
the same silence, the same ladder steps at the same offsets from the raise, the same call-out
SMS through the real `twilio` client to the project's Twilio-compatible endpoint. The phone-in
is raised over HTTP by an operator (POST /api/alerts); the device one as the gateway raises it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from tests import builders
from tests.support.dispatch import ELDER, DispatchBench, operator_resolves

# Silence at each of these offsets from the raise: every aide's timeout, the centres, the county.
OFFSETS_S = (0, 180, 360, 540, 720, 900)


async def _run_silent(bench: DispatchBench, alert_id: int, raised_at: datetime) -> list[Any]:
    """Let nobody answer: the ladder's steps and SMS, as offsets from the raise."""
    for offset in OFFSETS_S:
        await builders.tick_at(bench.sessions, bench.clock, raised_at + timedelta(seconds=offset))
        await bench.send_outbox()
    alert = await bench.alert(alert_id)
    attempts = [
        (a.step, a.responder_id, a.role, (a.asked_at - raised_at).total_seconds(), a.answer)
        for a in await bench.attempts(alert_id)
    ]
    sms = [
        # not the status: the endpoint's receipts arrive when they do
        (m.purpose, m.to_phone, m.body.replace(alert.code, "A?"))
        for m in await builders.outbox(bench.sessions, alert_id)
    ]
    steps = [
        ((t.at - raised_at.replace(microsecond=0)).total_seconds(), t.action)
        for t in await bench.timeline(alert_id)
        if t.action != "phone_in"  # the one row a phone-in adds: who called
    ]
    return [alert.status, alert.priority, alert.at_risk, alert.breached, attempts, sms, steps]


async def test_a_phone_in_alert_escalates_exactly_like_a_device_one(bench: DispatchBench) -> None:
    device = await bench.raise_alert(ELDER)
    assert device.id is not None
    by_device = await _run_silent(bench, device.id, device.raised_at)
    await operator_resolves(bench, device.id)
    assert len(by_device[4]) >= 3, "the silent ladder asked fewer than three"

    bench.clock.advance(timedelta(hours=1))
    elder = await bench.elder(ELDER)
    async with httpx.AsyncClient(base_url=bench.web_url) as http:
        county = await builders.operator_token(http, "county")
        body = {"elder_id": elder.id, "kind": "other", "caller": "relative"}
        res = await http.post("/api/alerts", headers=county, json=body)
    assert res.status_code == 201, res.text
    phoned = await bench.alert(res.json()["alert"]["id"])
    assert phoned.source == "phone_in" and phoned.kind == device.kind
    assert phoned.raised_at == bench.clock.now().replace(microsecond=phoned.raised_at.microsecond)
    assert phoned.id is not None
    by_phone = await _run_silent(bench, phoned.id, phoned.raised_at)

    assert by_phone == by_device
    # Every call-out went over the wire to the SMS endpoint.
    for purpose, phone, _ in by_phone[5]:
        if purpose == "dispatch":
            assert any(phoned.code in m.body for m in bench.sandbox.messages_to(phone))
