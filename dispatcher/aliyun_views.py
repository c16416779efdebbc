"""Aliyun's HTTP batch push: delivery receipts (SmsReport) and replies (SmsUp, 上行短信).

Aliyun POSTs a JSON array to the URLs set in its console and signs nothing, so the platform's
push URLs carry a secret of its own, `ANXIN_ALIYUN_PUSH_TOKEN`, in their path
(`{ANXIN_PUBLIC_URL}/aliyun/sms/report/<token>`, `…/aliyun/sms/up/<token>`; README,
Decisions); a call-out call's progress, its key and its end (VoiceCallReport, VoiceReport) to
`…/aliyun/voice/report/<token>`. A request without the token is refused with 403 and changes nothing. Each answers
`{"code": 0}` (what Aliyun waits for) only after what it carried is committed; anything else
makes Aliyun push it again.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse

from anxin.db import transaction
from anxin.logging import get_logger
from anxin.web import context
from dispatcher import inbound
from dispatcher.models import CallStatus
from dispatcher.provider_errors import KEYPRESS_STATUS, aliyun_call_status, aliyun_receipt_reason
from dispatcher.reports import AlertResponses
from dispatcher.views import _receipts, _visits

router = APIRouter(tags=["aliyun"])
log = get_logger("dispatcher.aliyun_views")
ACCEPTED = {"code": 0, "msg": "成功"}


def _digits_e164(number: str) -> str:
    number = number.strip()
    if number.startswith("+"):
        return number
    if number.startswith("86") and len(number) == 13:
        return "+" + number
    return "+86" + number


async def _verified_batch(request: Request, token: str) -> list[dict[str, Any]]:
    """The pushed array, if the path carries our push token; 403 (nothing changed) otherwise."""
    expected = context(request).settings.aliyun_push_token
    if expected is None or not secrets.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    ):
        log.warning("aliyun_push_refused", path=request.url.path.rsplit("/", 1)[0])
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid Aliyun push token")
    try:
        batch = await request.json()
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "not JSON") from exc
    if isinstance(batch, dict):
        batch = [batch]
    if not isinstance(batch, list) or not all(isinstance(item, dict) for item in batch):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "expected a JSON array of objects")
    return batch


def _receipt(report: dict[str, Any]) -> inbound.Receipt:
    out_id = str(report.get("out_id") or "")
    success = report.get("success") in (True, "true", "True", 1, "1")
    err_code = str(report.get("err_code") or "") or None
    return inbound.Receipt(
        str(report.get("biz_id") or ""),
        "delivered" if success else "undelivered",
        err_code,
        int(out_id) if out_id.isdigit() and len(out_id) <= 18 else None,
        None if success else aliyun_receipt_reason(err_code, str(report.get("err_msg") or "")),
    )


def _responses(request: Request) -> AlertResponses:
    responses: AlertResponses = request.app.state.alert_responses
    return responses


@router.post("/aliyun/sms/report/{token}")
async def aliyun_sms_report(token: str, request: Request) -> JSONResponse:
    batch = await _verified_batch(request, token)
    receipts = _receipts(request)
    for report in batch:
        await receipts.apply(_receipt(report))
    return JSONResponse(ACCEPTED)


@router.post("/aliyun/sms/up/{token}")
async def aliyun_sms_up(token: str, request: Request) -> JSONResponse:
    batch = await _verified_batch(request, token)
    ctx = context(request)
    for up in batch:
        sequence = str(up.get("sequence_id") or "")
        async with transaction(ctx.sessions) as session:
            outcome = await inbound.handle_inbound(
                session,
                responses=_responses(request),
                from_phone=_digits_e164(str(up.get("phone_number") or "")),
                to_phone=str(up.get("dest_code") or ""),
                body=str(up.get("content") or ""),
                # Aliyun's id of an SmsUp: a push repeated after a lost answer is stored once.
                sid=f"aliyun-up:{sequence}" if sequence else "",
                now=ctx.clock.now(),
                visits=_visits(request),
            )
        log.info("sms_reply", outcome=outcome, provider="aliyun")
    return JSONResponse(ACCEPTED)


def _call_ref(value: object) -> int | None:
    text = str(value or "")
    return int(text) if text.isdigit() and len(text) <= 18 else None


@router.post("/aliyun/voice/report/{token}")
async def aliyun_voice_report(token: str, request: Request) -> JSONResponse:
    """VoiceCallReport (接通, 按键 with `dtmf`) and VoiceReport (the call's end), in order."""
    batch = await _verified_batch(request, token)
    ctx = context(request)
    for report in batch:
        status_code = str(report.get("status_code") or "")
        call_id, sid = _call_ref(report.get("out_id")), str(report.get("call_id") or "") or None
        async with transaction(ctx.sessions) as session:
            if status_code == KEYPRESS_STATUS and report.get("dtmf"):
                outcome = await inbound.call_keypress(
                    session,
                    responses=_responses(request),
                    call_id=call_id,
                    provider_sid=sid,
                    digits=str(report["dtmf"]),
                    now=ctx.clock.now(),
                )
                log.info("call_key", outcome=outcome, provider="aliyun")
                continue
            status = aliyun_call_status(status_code, str(report.get("smart_status_code") or ""))
            await inbound.call_status(
                session,
                responses=_responses(request),
                call_id=call_id,
                provider_sid=sid,
                status=CallStatus(status),
                now=ctx.clock.now(),
            )
    return JSONResponse(ACCEPTED)
