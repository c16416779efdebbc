"""Twilio webhooks (CONTRACT.md §2): delivery receipts and replies, signature-checked."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response

from anxin.db import transaction
from anxin.logging import get_logger
from anxin.web import context
from dispatcher import service
from dispatcher.twilio_provider import twilio_signature_valid

router = APIRouter(tags=["twilio"])
log = get_logger("dispatcher.views")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


async def _verified_form(request: Request, path: str) -> dict[str, str]:
    """The form, if X-Twilio-Signature matches; 403 (and nothing changed) otherwise."""
    settings = context(request).settings
    form = {k: str(v) for k, v in (await request.form()).items()}
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    # Twilio signs the URL it was given, query included: our public URL, not whatever host
    # the proxy shows us.
    query = request.url.query
    url = settings.callback_base + path + (f"?{query}" if query else "")
    if token is None or not twilio_signature_valid(
        token, url, form, request.headers.get("X-Twilio-Signature")
    ):
        log.warning("twilio_signature_refused", path=path)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid Twilio signature")
    return form


# Each webhook commits before it answers (its own transaction rather than the shared request
# session, whose commit runs after the response is sent): a 2xx means the receipt or reply is
# stored, and a failed commit is a 500 the sender can see.


@router.post("/twilio/status")
async def twilio_status(request: Request) -> Response:
    form = await _verified_form(request, "/twilio/status")
    ctx = context(request)
    sms_id = request.query_params.get("sms", "")
    async with transaction(ctx.sessions) as session:
        await service.handle_status(
            session,
            form.get("MessageSid", ""),
            form.get("MessageStatus", ""),
            form.get("ErrorCode"),
            ctx.clock.now(),
            sms_id=int(sms_id) if sms_id.isdigit() and len(sms_id) <= 18 else None,
        )
    return Response(status_code=204)


@router.post("/twilio/inbound")
async def twilio_inbound(request: Request) -> Response:
    form = await _verified_form(request, "/twilio/inbound")
    ctx = context(request)
    async with transaction(ctx.sessions) as session:
        outcome = await service.handle_inbound(
            session,
            from_phone=form.get("From", ""),
            to_phone=form.get("To", ""),
            body=form.get("Body", ""),
            sid=form.get("MessageSid", ""),
            now=ctx.clock.now(),
        )
    log.info("sms_reply", outcome=outcome)
    # Replies to the aide go through the outbox, so the TwiML answer is empty.
    return Response(EMPTY_TWIML, media_type="application/xml")
