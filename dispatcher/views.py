"""Twilio webhooks (CONTRACT.md §2): delivery receipts and replies, signature-checked."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response

from anxin.clock import Clock
from anxin.db import SessionMaker, transaction
from anxin.logging import get_logger
from anxin.web import context
from dispatcher import inbound, templates
from dispatcher.models import CallStatus
from dispatcher.reports import AlertResponses
from dispatcher.twilio_provider import TWILIO_CALL_STATUS, say_twiml, twilio_signature_valid
from dispatcher.visit_reports import VisitReports

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


class ReceiptBatcher:
    """Delivery receipts applied in batches: group commit.

    Two receipts per SMS (sent, delivered) arrive at several per second under load; one
    transaction each would cost three round trips and a commit apiece. A receipt waits here
    while the batch before it commits, then goes with every receipt that arrived meanwhile into
    one transaction; each request still answers only after the commit that stored its receipt.
    If a batch fails, its receipts are applied one by one, so one bad receipt fails only its own
    request.
    """

    MAX_BATCH = 500

    def __init__(self, sessions: SessionMaker, clock: Clock, responses: AlertResponses) -> None:
        self.sessions = sessions
        self.clock = clock
        self.responses = responses
        self.pending: list[tuple[inbound.Receipt, asyncio.Future[bool]]] = []
        self.flushing: asyncio.Task[None] | None = None

    async def apply(self, receipt: inbound.Receipt) -> bool:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append((receipt, done))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self.pending:
            batch = self.pending[: self.MAX_BATCH]
            del self.pending[: self.MAX_BATCH]
            try:
                async with transaction(self.sessions) as session:
                    applied = await inbound.handle_statuses(
                        session,
                        [r for r, _ in batch],
                        self.clock.now(),
                        responses=self.responses,
                    )
            except Exception as exc:
                if len(batch) > 1:
                    log.warning("receipt_batch_failed", size=len(batch), error=repr(exc))
                    await asyncio.gather(*(self._one(r, done) for r, done in batch))
                else:
                    _settle(batch[0][1], exc)
                continue
            for (_, done), ok in zip(batch, applied, strict=True):
                _settle(done, ok)

    async def _one(self, receipt: inbound.Receipt, done: asyncio.Future[bool]) -> None:
        try:
            async with transaction(self.sessions) as session:
                applied = await inbound.handle_statuses(
                    session, [receipt], self.clock.now(), responses=self.responses
                )
            _settle(done, applied[0])
        except Exception as exc:
            _settle(done, exc)


def _settle(done: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    if done.done():  # the request went away (client disconnected)
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def _responses(request: Request) -> AlertResponses:
    """What replies and failed deliveries do to alerts: set by the composition root
    (`anxin.app.create_app`), so this part never imports alert_service."""
    responses: AlertResponses = request.app.state.alert_responses
    return responses


def _visits(request: Request) -> VisitReports | None:
    """Where an aide's visit report goes (`访 E0012`): set by the composition root too."""
    visits: VisitReports | None = getattr(request.app.state, "visit_reports", None)
    return visits


def _receipts(request: Request) -> ReceiptBatcher:
    batcher = getattr(request.app.state, "receipts", None)
    if not isinstance(batcher, ReceiptBatcher):
        ctx = context(request)
        batcher = request.app.state.receipts = ReceiptBatcher(
            ctx.sessions, ctx.clock, _responses(request)
        )
    return batcher


@router.post("/twilio/status")
async def twilio_status(request: Request) -> Response:
    form = await _verified_form(request, "/twilio/status")
    sms_id = request.query_params.get("sms", "")
    await _receipts(request).apply(
        inbound.Receipt(
            form.get("MessageSid", ""),
            form.get("MessageStatus", ""),
            form.get("ErrorCode"),
            int(sms_id) if sms_id.isdigit() and len(sms_id) <= 18 else None,
        )
    )
    return Response(status_code=204)


@router.post("/twilio/inbound")
async def twilio_inbound(request: Request) -> Response:
    form = await _verified_form(request, "/twilio/inbound")
    ctx = context(request)
    async with transaction(ctx.sessions) as session:
        outcome = await inbound.handle_inbound(
            session,
            responses=_responses(request),
            from_phone=form.get("From", ""),
            to_phone=form.get("To", ""),
            body=form.get("Body", ""),
            sid=form.get("MessageSid", ""),
            now=ctx.clock.now(),
            visits=_visits(request),
        )
    log.info("sms_reply", outcome=outcome)
    # Replies to the aide go through the outbox, so the TwiML answer is empty.
    return Response(EMPTY_TWIML, media_type="application/xml")


# --- voice call-outs (issue 19): Twilio's call status callbacks and the <Gather> action --------


def _row_id(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 18 else None


@router.post("/twilio/call/status")
async def twilio_call_status(request: Request) -> Response:
    form = await _verified_form(request, "/twilio/call/status")
    status_word = TWILIO_CALL_STATUS.get(form.get("CallStatus", ""))
    if status_word is not None:
        ctx = context(request)
        async with transaction(ctx.sessions) as session:
            await inbound.call_status(
                session,
                responses=_responses(request),
                call_id=_row_id(request.query_params.get("call", "")),
                provider_sid=form.get("CallSid") or None,
                status=CallStatus(status_word),
                now=ctx.clock.now(),
            )
    return Response(status_code=204)


@router.post("/twilio/call/gather")
async def twilio_call_gather(request: Request) -> Response:
    form = await _verified_form(request, "/twilio/call/gather")
    ctx = context(request)
    async with transaction(ctx.sessions) as session:
        outcome = await inbound.call_keypress(
            session,
            responses=_responses(request),
            call_id=_row_id(request.query_params.get("call", "")),
            provider_sid=form.get("CallSid") or None,
            digits=form.get("Digits", ""),
            now=ctx.clock.now(),
        )
    log.info("call_key", outcome=outcome)
    return Response(say_twiml(templates.call_answer_speech(outcome)), media_type="application/xml")
