"""An aide's visit report by SMS (`访 E0012 [异常 …]`): recorded through `visits.service` and
answered in one short SMS. Implements `dispatcher.visit_reports.VisitReports`; wired in
`anxin.app` as `app.state.visit_reports`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from anxin.models import Responder
from dispatcher.outbox import answer_responder
from dispatcher.replies import Reply
from dispatcher.templates import SIGNATURE_EN, SIGNATURE_ZH, mask_name
from visits import schedule
from visits.models import RejectReason, VisitChannel
from visits.service import record_visit

FORMAT_ZH = "请回复：访 老人编号，如 访 E0012；有异常加说明，如 访 E0012 异常 摔过一次"
FORMAT_EN = "Reply: 访 elder-code, e.g. 访 E0012; a concern: 访 E0012 异常 what you saw"

# One answer per outcome, each one SMS segment; {code} the elder's code.
REJECTED_ZH = {
    RejectReason.unknown_elder: "没有编号为{code}的老人，本次未记录。请核对编号后重发：访 老人编号",
    RejectReason.not_assigned: "{code}不是您负责探访的老人，本次未计入探访。如有情况请联系乡镇值班员。",
    RejectReason.same_day: "{code}今天已记录过探访，本次未重复计入。",
    RejectReason.archived: "{code}已不在册，本次未计入探访。",
    RejectReason.future: "探访时间晚于现在，本次未记录。",
}
REJECTED_EN = {
    RejectReason.unknown_elder: "No elder {code}; not recorded. Check the code: 访 elder-code",
    RejectReason.not_assigned: "{code} is not yours to visit; not counted. Call the township desk if needed.",
    RejectReason.same_day: "{code} already has a visit today; not counted twice.",
    RejectReason.archived: "{code} has left the registry; not counted.",
    RejectReason.future: "A visit time in the future; not recorded.",
}


class VisitReplies:
    """`VisitReports` over `visits.service.record_visit` (local days in `timezone`)."""

    def __init__(self, timezone: str) -> None:
        self.timezone = timezone

    async def visit(
        self,
        session: AsyncSession,
        *,
        responder: Responder,
        reply: Reply,
        sms_id: int | None,
        now: datetime,
    ) -> str:
        english = responder.lang.startswith("en")
        sign = SIGNATURE_EN if english else SIGNATURE_ZH

        async def answer(text: str) -> None:
            await answer_responder(session, responder, sign + text, "visit", now)

        if reply.elder_code is None:
            await answer(FORMAT_EN if english else FORMAT_ZH)
            return "visit:no_code"
        result = await record_visit(
            session,
            channel=VisitChannel.sms,
            now=now,
            timezone=self.timezone,
            elder_code=reply.elder_code,
            responder=responder,
            sms_id=sms_id,
            note=reply.note or "",
            concern=reply.concern,
            urgent=reply.urgent,
        )
        code = result.elder.code if result.elder is not None else reply.elder_code
        followed = ""
        if result.alert_id is not None:
            followed = (
                f" Concern passed on as A{result.alert_id}."
                if english
                else f"异常已转值班员跟进(A{result.alert_id})。"
            )
        if result.reason is not None:
            table = REJECTED_EN if english else REJECTED_ZH
            await answer(table[result.reason].format(code=code) + followed)
            return f"visit:rejected:{result.reason.value}"
        assert result.elder is not None
        day = schedule.local_date(result.visit.visited_at, self.timezone)
        if english:
            text = f"Visit to {code} on {day:%m-%d} recorded, thank you.{followed}"
        else:
            name = mask_name(result.elder.name)
            text = f"已记录{day.month}月{day.day}日探访{name}({code})，谢谢！{followed}"
        await answer(text)
        return "visit:counted"
