"""What an elder's family texted (issue 20 item 2): the operator reads it on the elder's page.

`GET /api/elders/{elder_id}/messages`: the SMS from the elder's guardians' numbers, newest
first (help words, replies, 退订), each with the alert it raised, joined or was recorded on.
Scoped to the operator's region (another region's elder: 404) and audited, as every read of an
elder's record is.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel
from sqlalchemy import select
from sqlmodel import col

from anxin.models import Elder
from anxin.web import Ctx, CurrentOperator, RowId, Session, audit
from dispatcher.models import SmsMessage

router = APIRouter(prefix="/api", tags=["family"])
MESSAGES_SHOWN = 100


class FamilyMessageOut(BaseModel):
    id: int
    at: datetime
    from_phone: str
    body: str
    purpose: str  # text_alert | family_message | opt_out | opt_in
    alert_id: int | None


@router.get("/elders/{elder_id}/messages", response_model=list[FamilyMessageOut])
async def elder_messages(
    elder_id: RowId, ctx: Ctx, session: Session, operator: CurrentOperator
) -> list[FamilyMessageOut]:
    """The last 100 SMS from the elder's family, newest first."""
    elder = await session.get(Elder, elder_id)
    if elder is None or elder.village_id not in operator.region_ids:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "没有这位老人 / no such elder")
    rows = await session.execute(
        select(SmsMessage)
        .where(col(SmsMessage.elder_id) == elder_id, col(SmsMessage.direction) == "in")
        .order_by(col(SmsMessage.created_at).desc(), col(SmsMessage.id).desc())
        .limit(MESSAGES_SHOWN)
    )
    audit(session, operator, ctx.clock.now(), "read_elder_messages", "elder", elder_id)
    return [
        FamilyMessageOut(
            id=m.id or 0,
            at=m.created_at,
            from_phone=m.from_phone,
            body=m.body,
            purpose=m.purpose,
            alert_id=m.alert_id,
        )
        for m in rows.scalars()
    ]
