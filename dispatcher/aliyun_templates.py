"""Aliyun SMS templates: every SMS the platform sends, as the template it is registered as. Pure.

Aliyun sends no free text: a message is a registered template code plus its variables, and the
sign name (【安心】) is Aliyun's to add. `TEMPLATES` is that register, as data: the Aliyun provider
(`dispatcher.aliyun_sms`) sends by it, the project's Aliyun-compatible endpoint
(`dispatcher.aliyun_sandbox`) accepts exactly these, and docs/operations.md lists them for the
operator to register (Aliyun assigns its own `SMS_…` codes; `ANXIN_ALIYUN_TEMPLATE_CODES` maps
ours to them).

The outbox keeps the text `dispatcher.templates` wrote (what the console shows and Twilio
sends). `to_template(body)` finds the template that text was written from and reads the
variables back out of it, so rendering them gives the same text again; a variable longer than
Aliyun's 35 characters, or carrying a link, is shortened (`fit_variable`) before it is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from dispatcher.templates import KIND_LABELS_EN, KIND_LABELS_ZH, SIGNATURE_EN, SIGNATURE_ZH

# Aliyun's rules for a notification template's variables (DESIGN.md's reference figures).
MAX_VARIABLE_CHARS = 35
# What Aliyun calls a link in a variable; the endpoint refuses one, the platform cuts it out.
LINK = re.compile(r"(?i)(https?://|www\.)\S*|\b[\w-]+\.(com|cn|net|org|top|xyz|cc)\b\S*")
# An empty variable is refused by Aliyun: the platform sends this instead.
EMPTY_VARIABLE = "-"
_VARIABLE = re.compile(r"\$\{(\w+)\}")
# Variables whose form is known; any other is any text (at least the shortest that fits).
_KIND_WORDS = sorted({*KIND_LABELS_ZH.values(), *KIND_LABELS_EN.values(), "求助", "alert"}, key=len)
_VARIABLE_FORMS: Mapping[str, str] = {
    "code": r"A\d+",
    "count": r"\d+",
    "km": r"\d+(?:\.\d)?",
    "minutes": r"\d+",
    "month": r"\d{1,2}",
    "day": r"\d{1,2}",
    # The alert's kind is one of the labels (dispatcher.templates), longest first.
    "kind": "|".join(re.escape(word) for word in reversed(_KIND_WORDS)),
}


@dataclass(frozen=True)
class Template:
    """One registered template: our name for it (`key`, the default code), its text with
    `${var}` variables, and the purpose it serves (for the operator's list)."""

    key: str
    text: str
    purpose: str

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(_VARIABLE.findall(self.text))

    def render(self, params: Mapping[str, str]) -> str:
        """The message as Aliyun writes it from the template (without the sign name)."""
        return _VARIABLE.sub(lambda m: params[m.group(1)], self.text)


TEMPLATES: tuple[Template, ...] = (
    Template(
        "ANXIN_CALLOUT",
        "${code} ${kind}：${name}，${place}。距您${km}公里约${minutes}分钟。回1接单 0不能去 2到达 3完成",
        "dispatch",
    ),
    Template(
        "ANXIN_CALLOUT_CENTRE",
        "升级 ${code} ${kind}：${name}，${place}。距您${km}公里约${minutes}分钟。回1接单 0不能去 2到达 3完成",
        "dispatch",
    ),
    Template("ANXIN_HANDLED", "${code} 已由${taker}接单，无需前往。", "handled_by"),
    Template("ANXIN_NOT_TAKER", "${code} 已由${taker}接单，您的回复未生效。", "not_taker"),
    Template("ANXIN_REASSIGNED", "${code} 已改派他人，无需前往。", "reassigned"),
    Template(
        "ANXIN_HELP",
        "请回复：1接单 0不能去 2到达 3完成(可加误报/送医)，上班/下班。多单请加编号如1 A27",
        "help",
    ),
    Template(
        "ANXIN_PRESSED_AGAIN",
        "${code} ${name}再次呼叫（共${count}次），请尽快到达。",
        "pressed_again",
    ),
    Template("ANXIN_REMINDER", "${code} 尚未收到到达回复。到达请回2，去不了请回0。", "reminder"),
    Template(
        "ANXIN_GUARDIAN",
        "您的家人${name}触发${kind}告警，已通知助老员前往，请保持电话畅通。",
        "guardian",
    ),
    Template("ANXIN_DUTY_ON", "已设为值班，有求助会短信通知您。回“下班”停止。", "duty"),
    Template("ANXIN_DUTY_OFF", "已设为下班，不再派单。回“上班”恢复。", "duty"),
    # English, for responders whose language is English (`Responder.lang`).
    Template(
        "ANXIN_CALLOUT_EN",
        "${code} ${kind}: ${name}, ${place}. ${km} km, ~${minutes} min. "
        "Reply 1 take, 0 can't, 2 arrived, 3 done",
        "dispatch",
    ),
    Template(
        "ANXIN_CALLOUT_CENTRE_EN",
        "ESCALATED ${code} ${kind}: ${name}, ${place}. ${km} km, ~${minutes} min. "
        "Reply 1 take, 0 can't, 2 arrived, 3 done",
        "dispatch",
    ),
    Template("ANXIN_HANDLED_EN", "${code} taken by ${taker}. No need to go.", "handled_by"),
    Template(
        "ANXIN_NOT_TAKER_EN",
        "${code} was taken by ${taker}; your reply changed nothing.",
        "not_taker",
    ),
    Template(
        "ANXIN_REASSIGNED_EN",
        "${code} was reassigned to someone else. No need to go.",
        "reassigned",
    ),
    Template(
        "ANXIN_HELP_EN",
        "Reply 1 take, 0 can't, 2 arrived, 3 done (+outcome), 上班 on duty, 下班 off duty. "
        "Several alerts: add the code, e.g. 1 A27",
        "help",
    ),
    Template(
        "ANXIN_PRESSED_AGAIN_EN",
        "${code} ${name} pressed again (${count} times). Hurry.",
        "pressed_again",
    ),
    Template(
        "ANXIN_REMINDER_EN",
        "${code} not there yet? Reply 2 on arrival, 0 if you can't go.",
        "reminder",
    ),
    Template(
        "ANXIN_GUARDIAN_EN",
        "${name}: ${kind} alert. A responder has been notified. Please keep your phone on.",
        "guardian",
    ),
    Template(
        "ANXIN_DUTY_ON_EN",
        "You are on duty: alerts will be sent to you. Reply 下班 to stop.",
        "duty",
    ),
    Template("ANXIN_DUTY_OFF_EN", "You are off duty: no alerts until you reply 上班.", "duty"),
)


def _and_concern(key: str, text: str, followed: str) -> tuple[Template, Template]:
    """A visit answer, and the same with "the concern went to the duty operator (A27)"."""
    return Template(key, text, "visit"), Template(key + "_CONCERN", text + followed, "visit")


_FOLLOWED_ZH = "异常已转值班员跟进(${code})。"
_FOLLOWED_EN = " Concern passed on as ${code}."
# The answers to a visit report (`访 E0012`, visits.replies): ${elder} is the elder's code.
VISIT_TEMPLATES: tuple[Template, ...] = (
    Template(
        "ANXIN_VISIT_FORMAT",
        "请回复：访 老人编号，如 访 E0012；有异常加说明，如 访 E0012 异常 摔过一次",
        "visit",
    ),
    *_and_concern(
        "ANXIN_VISIT_COUNTED", "已记录${month}月${day}日探访${name}(${elder})，谢谢！", _FOLLOWED_ZH
    ),
    Template(
        "ANXIN_VISIT_UNKNOWN_ELDER",
        "没有编号为${elder}的老人，本次未记录。请核对编号后重发：访 老人编号",
        "visit",
    ),
    *_and_concern(
        "ANXIN_VISIT_NOT_ASSIGNED",
        "${elder}不是您负责探访的老人，本次未计入探访。如有情况请联系乡镇值班员。",
        _FOLLOWED_ZH,
    ),
    *_and_concern(
        "ANXIN_VISIT_SAME_DAY", "${elder}今天已记录过探访，本次未重复计入。", _FOLLOWED_ZH
    ),
    Template("ANXIN_VISIT_ARCHIVED", "${elder}已不在册，本次未计入探访。", "visit"),
    *_and_concern("ANXIN_VISIT_FUTURE", "探访时间晚于现在，本次未记录。", _FOLLOWED_ZH),
    Template(
        "ANXIN_VISIT_FORMAT_EN",
        "Reply: 访 elder-code, e.g. 访 E0012; a concern: 访 E0012 异常 what you saw",
        "visit",
    ),
    *_and_concern(
        "ANXIN_VISIT_COUNTED_EN",
        "Visit to ${elder} on ${month}-${day} recorded, thank you.",
        _FOLLOWED_EN,
    ),
    Template(
        "ANXIN_VISIT_UNKNOWN_ELDER_EN",
        "No elder ${elder}; not recorded. Check the code: 访 elder-code",
        "visit",
    ),
    *_and_concern(
        "ANXIN_VISIT_NOT_ASSIGNED_EN",
        "${elder} is not yours to visit; not counted. Call the township desk if needed.",
        _FOLLOWED_EN,
    ),
    *_and_concern(
        "ANXIN_VISIT_SAME_DAY_EN",
        "${elder} already has a visit today; not counted twice.",
        _FOLLOWED_EN,
    ),
    Template("ANXIN_VISIT_ARCHIVED_EN", "${elder} has left the registry; not counted.", "visit"),
    *_and_concern(
        "ANXIN_VISIT_FUTURE_EN", "A visit time in the future; not recorded.", _FOLLOWED_EN
    ),
    # The aide's weekly digest of visits due (visits.digest): ${list} is "E0012 张XX，…", cut to
    # Aliyun's 35 characters (the first ones kept, overdue first); ${count} says how many.
    Template("ANXIN_VISIT_DIGEST", "本周待探访：${list} 共${count}位", "visit"),
    Template("ANXIN_VISIT_DIGEST_EN", "Visits due this week: ${list} (${count} in all)", "visit"),
)
# To an elder's family (`templates.text_alert_sms`, `all_clear_sms`, `family_opt_sms`; issue 20).
FAMILY_TEMPLATES: tuple[Template, ...] = (
    Template(
        "ANXIN_TEXTIN_RAISED",
        "已收到求助，正在通知助老员，请保持电话畅通。紧急情况请同时拨打120。",
        "family",
    ),
    Template(
        "ANXIN_TEXTIN_JOINED",
        "已收到，求助正在处理中，助老员已在途或正被通知，请保持电话畅通。",
        "family",
    ),
    Template(
        "ANXIN_ALL_CLEAR",
        "您的家人${name}的${kind}告警已结束：${outcome}。回复退订不再接收。",
        "family",
    ),
    Template("ANXIN_OPT_OUT", "已退订，不再向您发送老人告警通知。回复订阅可恢复。", "family"),
    Template("ANXIN_OPT_IN", "已恢复订阅，老人有告警时会短信通知您。回复退订停止。", "family"),
)
TEMPLATES = (*TEMPLATES, *VISIT_TEMPLATES, *FAMILY_TEMPLATES)

# Aliyun voice (语音服务): the text-to-speech templates of a call-out call (`IvrCall`'s
# StartCode) and what it says after each key (its MenuKeyMap), from `templates.call_speech`.
VOICE_TEMPLATES: tuple[Template, ...] = (
    Template(
        "ANXIN_TTS_CALLOUT",
        "安心平台紧急呼叫。${who}${kind}，距您${km}公里，约${minutes}分钟。"
        "接单请按1，不能去请按0，到达后请回复短信2。",
        "call",
    ),
    Template(
        "ANXIN_TTS_CALLOUT_CENTRE",
        "安心平台升级呼叫。${who}${kind}，距您${km}公里，约${minutes}分钟。"
        "接单请按1，不能去请按0，到达后请回复短信2。",
        "call",
    ),
    Template("ANXIN_TTS_KEY_1", "已收到，请尽快前往。到达后请回复短信2。", "call_key_1"),
    Template("ANXIN_TTS_KEY_0", "已记录您不能去，平台将通知下一位。", "call_key_0"),
)
CALL_KEY_TEMPLATES: Mapping[str, str] = {"1": "ANXIN_TTS_KEY_1", "0": "ANXIN_TTS_KEY_0"}

BY_KEY: Mapping[str, Template] = {t.key: t for t in (*TEMPLATES, *VOICE_TEMPLATES)}


@dataclass(frozen=True)
class AliyunMessage:
    """What SendSms carries for one SMS: the template and its variables, already fitted."""

    template: Template
    params: dict[str, str]
    # Which variables had to be shortened (or had a link cut out) to pass Aliyun's rules.
    shortened: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.template.render(self.params)


class NoTemplate(ValueError):
    """The text was not written from any registered template: Aliyun would refuse it."""


def variable_problem(value: str) -> str | None:
    """Why Aliyun refuses this variable value (None: it does not)."""
    if not value:
        return "empty"
    if len(value) > MAX_VARIABLE_CHARS:
        return "too_long"
    if LINK.search(value):
        return "link"
    return None


def fit_variable(value: str) -> str:
    """The value as Aliyun takes it: links cut out, at most 35 characters (the end cut and
    marked with …), never empty. A village or an elder's name is recognisable by its start."""
    value = " ".join(LINK.sub("", value).split())
    if len(value) > MAX_VARIABLE_CHARS:
        value = value[: MAX_VARIABLE_CHARS - 1] + "…"
    return value or EMPTY_VARIABLE


@cache
def _pattern(template: Template) -> re.Pattern[str]:
    parts: list[str] = []
    position = 0
    for match in _VARIABLE.finditer(template.text):
        parts.append(re.escape(template.text[position : match.start()]))
        name = match.group(1)
        parts.append(f"(?P<{name}>{_VARIABLE_FORMS.get(name, '.*?')})")
        position = match.end()
    parts.append(re.escape(template.text[position:]))
    return re.compile("".join(parts), re.DOTALL)


def _literal_length(template: Template) -> int:
    return len(_VARIABLE.sub("", template.text))


# The most specific first: the centre's call-out ("升级 A27 …") before the aide's.
_BY_SPECIFICITY = sorted(TEMPLATES, key=_literal_length, reverse=True)
_VOICE_BY_SPECIFICITY = sorted(VOICE_TEMPLATES[:2], key=_literal_length, reverse=True)


def strip_signature(body: str) -> str:
    """The text without our sign (Aliyun adds its sign name itself)."""
    for signature in (SIGNATURE_ZH, SIGNATURE_EN):
        if body.startswith(signature):
            return body[len(signature) :]
    return body


def to_template(body: str) -> AliyunMessage:
    """The registered template `body` was written from and its variables, fitted to Aliyun's
    rules. Raises NoTemplate when no template writes this text."""
    return _match(strip_signature(body), _BY_SPECIFICITY)


def to_voice_template(speech: str) -> AliyunMessage:
    """The text-to-speech template a call-out's speech (`templates.call_speech`) was written
    from, its variables fitted. Raises NoTemplate."""
    return _match(speech, _VOICE_BY_SPECIFICITY)


def _match(text: str, candidates: list[Template]) -> AliyunMessage:
    for template in candidates:
        match = _pattern(template).fullmatch(text)
        if match is None:
            continue
        raw = {name: value for name, value in match.groupdict().items()}
        params = {name: fit_variable(value) for name, value in raw.items()}
        shortened = tuple(name for name in template.variables if params[name] != raw[name])
        return AliyunMessage(template, params, shortened)
    raise NoTemplate(f"no registered template writes this text ({len(text)} characters)")
