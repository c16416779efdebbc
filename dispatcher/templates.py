"""SMS texts for aides, centres and families. Pure. Simplified Chinese first, English on request.

Minimum personal data (PIPL): who, where, what kind of alert, never a diagnosis. A dispatch SMS
aims at one segment (70 UCS-2 characters for Chinese), because basic phones on patchy signal
reassemble long messages badly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

KIND_LABELS_ZH: dict[str, str] = {
    "sos": "一键呼叫",
    "fall": "跌倒",
    "bed_exit": "夜间离床未归",
    "smoke": "烟雾",
    "gas": "燃气",
    "vitals": "生命体征异常",
    "inactivity": "长时间无活动",
    "water_leak": "漏水",
    "door_open": "夜间开门",
    "offline": "设备离线",
    "low_battery": "电量低",
    "tamper": "设备被拆",
    "power_lost": "断电",
    "welfare_check": "上门探视",
    "visit_concern": "探访发现异常",
    "illness": "突发疾病",  # a phone-in (代报警)
    "missing": "走失",  # a phone-in
    "test": "测试",
}

KIND_LABELS_EN: dict[str, str] = {
    "sos": "SOS button",
    "fall": "fall",
    "bed_exit": "out of bed at night",
    "smoke": "smoke",
    "gas": "gas",
    "vitals": "abnormal vital signs",
    "inactivity": "no activity for long",
    "water_leak": "water leak",
    "door_open": "door opened at night",
    "offline": "device offline",
    "low_battery": "low battery",
    "tamper": "device removed",
    "power_lost": "power cut",
    "welfare_check": "welfare visit",
    "visit_concern": "concern found on a visit",
    "illness": "sudden illness",
    "missing": "missing elder",
    "test": "test",
}

SIGNATURE_ZH = "【安心】"
SIGNATURE_EN = "[Anxin] "
REPLY_HINT_ZH = "回1接单 0不能去 2到达 3完成"
REPLY_HINT_EN = "Reply 1 take, 0 can't, 2 arrived, 3 done"

# GSM 03.38: the basic set costs one septet, the extension set two (escape + char).
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")
# Characters per segment: (single, each part of a concatenated message).
_GSM7_LIMITS = (160, 153)
_UCS2_LIMITS = (70, 67)

# Two-character surnames that would otherwise be masked to the wrong "surname".
_COMPOUND_SURNAMES = frozenset(
    {"欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "司徒", "夏侯"}
)
_MIN_ADDRESS_CHARS = 6


def _english(lang: str) -> bool:
    return lang.lower().startswith("en")


def sms_units(text: str) -> tuple[int, bool]:
    """(length in encoding units, whether it needs UCS-2) as a handset counts them."""
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENDED for ch in text):
        return sum(2 if ch in _GSM7_EXTENDED else 1 for ch in text), False
    # UCS-2 counts UTF-16 code units: an emoji outside the BMP takes two.
    return len(text.encode("utf-16-le")) // 2, True


def sms_segments(text: str) -> int:
    """How many SMS segments a carrier bills for this text."""
    units, ucs2 = sms_units(text)
    single, part = _UCS2_LIMITS if ucs2 else _GSM7_LIMITS
    return 1 if units <= single else math.ceil(units / part)


def kind_label(kind: str, lang: str = "zh") -> str:
    if _english(lang):
        return KIND_LABELS_EN.get(kind, "alert")
    return KIND_LABELS_ZH.get(kind, "求助")


def mask_name(name: str) -> str:
    """王小明 → 王XX, 欧阳娜娜 → 欧阳XX, Li Lei → Li XX: enough to recognise a colleague."""
    name = name.strip()
    if not name:
        return "XX"
    if " " in name:
        return name.split()[0] + " XX"
    surname = name[:2] if name[:2] in _COMPOUND_SURNAMES else name[:1]
    return surname + "XX"


def _minutes(eta_minutes: float) -> int:
    # Round up: promising 7 minutes and arriving in 8 is worse than the reverse.
    return max(1, math.ceil(eta_minutes - 1e-9))


def _km(distance_km: float) -> str:
    return f"{distance_km:.1f}" if distance_km < 10 else f"{distance_km:.0f}"


def _place(village: str, address: str, separator: str = "") -> str:
    address = address.strip()
    if not village or address.startswith(village):
        return address
    return village + separator + address


def _fit_one_segment(build: Callable[[str], str], address: str) -> str:
    """Shorten the address (the least needed part: the aide knows the village) to fit one segment.

    When even a short address cannot make it fit (long names, English with Chinese names),
    the full address is worth more than the segment saved.
    """
    full = build(address)
    for cut in range(len(address) - 1, _MIN_ADDRESS_CHARS - 1, -1):
        if sms_segments(full) == 1:
            break
        shortened = build(address[:cut] + "…")
        if sms_segments(shortened) == 1:
            return shortened
    return full


def _call_out(
    *,
    alert_code: str,
    elder_name: str,
    village: str,
    address: str,
    kind: str,
    distance_km: float,
    eta_minutes: float,
    lang: str,
    escalated: bool,
) -> str:
    label = kind_label(kind, lang)
    km, minutes = _km(distance_km), _minutes(eta_minutes)
    if _english(lang):
        head = f"{SIGNATURE_EN}{'ESCALATED ' if escalated else ''}{alert_code} {label}: "

        def build_en(where: str) -> str:
            return f"{head}{elder_name}, {where}. {km} km, ~{minutes} min. {REPLY_HINT_EN}"

        return _fit_one_segment(build_en, _place(village, address, separator=", "))

    head = f"{SIGNATURE_ZH}{'升级 ' if escalated else ''}{alert_code} {label}："

    def build_zh(where: str) -> str:
        return f"{head}{elder_name}，{where}。距您{km}公里约{minutes}分钟。{REPLY_HINT_ZH}"

    return _fit_one_segment(build_zh, _place(village, address))


def dispatch_sms(
    *,
    alert_code: str,
    elder_name: str,
    village: str,
    address: str,
    kind: str,
    distance_km: float,
    eta_minutes: float,
    lang: str = "zh",
) -> str:
    """To the chosen aide: what happened, to whom, where, how far, and how to answer."""
    return _call_out(
        alert_code=alert_code,
        elder_name=elder_name,
        village=village,
        address=address,
        kind=kind,
        distance_km=distance_km,
        eta_minutes=eta_minutes,
        lang=lang,
        escalated=False,
    )


def centre_sms(
    *,
    alert_code: str,
    elder_name: str,
    village: str,
    address: str,
    kind: str,
    distance_km: float,
    eta_minutes: float,
    lang: str = "zh",
) -> str:
    """To a township or county duty phone: the same call-out, marked as escalated."""
    return _call_out(
        alert_code=alert_code,
        elder_name=elder_name,
        village=village,
        address=address,
        kind=kind,
        distance_km=distance_km,
        eta_minutes=eta_minutes,
        lang=lang,
        escalated=True,
    )


def handled_by_sms(alert_code: str, taker_name: str, lang: str = "zh") -> str:
    """To the other aides who were asked: someone has it, stand down."""
    taker = mask_name(taker_name)
    if _english(lang):
        return f"{SIGNATURE_EN}{alert_code} taken by {taker}. No need to go."
    return f"{SIGNATURE_ZH}{alert_code} 已由{taker}接单，无需前往。"


def not_taker_sms(alert_code: str, taker_name: str, lang: str = "zh") -> str:
    """To an aide whose arrival (`2`) or completion (`3`) was for an alert someone else took:
    it changed nothing (CONTRACT §5)."""
    taker = mask_name(taker_name)
    if _english(lang):
        return f"{SIGNATURE_EN}{alert_code} was taken by {taker}; your reply changed nothing."
    return f"{SIGNATURE_ZH}{alert_code} 已由{taker}接单，您的回复未生效。"


def reassigned_sms(alert_code: str, lang: str = "zh") -> str:
    """To an aide whose request the operator withdrew (改派), and to their late replies."""
    if _english(lang):
        return f"{SIGNATURE_EN}{alert_code} was reassigned to someone else. No need to go."
    return f"{SIGNATURE_ZH}{alert_code} 已改派他人，无需前往。"


def help_sms(lang: str = "zh") -> str:
    """The reply grammar, for anyone who sent something we could not read."""
    if _english(lang):
        return (
            f"{SIGNATURE_EN}Reply 1 take, 0 can't, 2 arrived, 3 done (+outcome), 上班 on duty, "
            "下班 off duty. Several alerts: add the code, e.g. 1 A27"
        )
    return (
        f"{SIGNATURE_ZH}请回复：1接单 0不能去 2到达 3完成(可加误报/送医)，上班/下班。"
        "多单请加编号如1 A27"
    )


def pressed_again_sms(alert_code: str, elder_name: str, count: int, lang: str = "zh") -> str:
    """The elder pressed again: never ignored, the responder hears about it."""
    if _english(lang):
        return f"{SIGNATURE_EN}{alert_code} {elder_name} pressed again ({count} times). Hurry."
    return f"{SIGNATURE_ZH}{alert_code} {elder_name}再次呼叫（共{count}次），请尽快到达。"


def reminder_sms(alert_code: str, lang: str = "zh") -> str:
    """To the aide who took it but has not reported arrival in time."""
    if _english(lang):
        return f"{SIGNATURE_EN}{alert_code} not there yet? Reply 2 on arrival, 0 if you can't go."
    return f"{SIGNATURE_ZH}{alert_code} 尚未收到到达回复。到达请回2，去不了请回0。"


def guardian_sms(elder_name: str, kind: str, lang: str = "zh") -> str:
    """To family: informational only, no diagnosis; help is already on its way."""
    label = kind_label(kind, lang)
    if _english(lang):
        return (
            f"{SIGNATURE_EN}{elder_name}: {label} alert. A responder has been notified. "
            "Please keep your phone on."
        )
    return f"{SIGNATURE_ZH}您的家人{elder_name}触发{label}告警，已通知助老员前往，请保持电话畅通。"


# --- the elder's family: text-in alerts, the all clear, opting out (issue 20 items 2, 4) -------
# Chinese only: guardians have no language setting. No health detail (PIPL): the outcome in
# plain words (README, Decisions, "Guardians told and heard"), never the note or a diagnosis.

# What an alert's outcome (`Alert.outcome`) says to the family.
ALL_CLEAR_OUTCOMES_ZH: dict[str, str] = {
    "handled": "助老员已到场处理",
    "false_alarm": "经核实为误报，老人平安",
    "hospital": "已协助老人就医",
    "device_recovered": "设备已恢复正常",
}


def text_alert_sms(joined: bool) -> str:
    """The answer to a help word from an elder's or guardian's number."""
    if joined:
        return f"{SIGNATURE_ZH}已收到，求助正在处理中，助老员已在途或正被通知，请保持电话畅通。"
    return f"{SIGNATURE_ZH}已收到求助，正在通知助老员，请保持电话畅通。紧急情况请同时拨打120。"


def all_clear_sms(elder_name: str, kind: str, outcome: str) -> str:
    """To the family told when the alert started: it is over, and how, in plain words."""
    how = ALL_CLEAR_OUTCOMES_ZH.get(outcome, "已处理完毕")
    return f"{SIGNATURE_ZH}您的家人{elder_name}的{kind_label(kind)}告警已结束：{how}。回复退订不再接收。"


def family_opt_sms(opted_out: bool) -> str:
    """Confirms a guardian's 退订 / 订阅."""
    if opted_out:
        return f"{SIGNATURE_ZH}已退订，不再向您发送老人告警通知。回复订阅可恢复。"
    return f"{SIGNATURE_ZH}已恢复订阅，老人有告警时会短信通知您。回复退订停止。"


def duty_sms(on: bool, lang: str = "zh") -> str:
    """Confirms an aide's 上班/下班 reply."""
    if _english(lang):
        if on:
            return f"{SIGNATURE_EN}You are on duty: alerts will be sent to you. Reply 下班 to stop."
        return f"{SIGNATURE_EN}You are off duty: no alerts until you reply 上班."
    if on:
        return f"{SIGNATURE_ZH}已设为值班，有求助会短信通知您。回“下班”停止。"
    return f"{SIGNATURE_ZH}已设为下班，不再派单。回“上班”恢复。"


# --- voice call-outs (issue 19) ---------------------------------------------------------------

CALL_KEYS_HINT_ZH = "接单请按1，不能去请按0，到达后请回复短信2"


def call_speech(
    *,
    elder_name: str,
    village: str,
    kind: str,
    distance_km: float,
    eta_minutes: float,
    escalated: bool = False,
) -> str:
    """What a call-out call says (text-to-speech, Chinese, said twice): who, which village, how
    far, and the keys. Numbers as words a TTS engine reads well ("2.5公里", "约6分钟")."""
    who = f"{village}的{elder_name}老人" if village else f"{elder_name}老人"
    head = "安心平台升级呼叫。" if escalated else "安心平台紧急呼叫。"
    return (
        f"{head}{who}{kind_label(kind, 'zh')}，"
        f"距您{_km(distance_km)}公里，约{_minutes(eta_minutes)}分钟。{CALL_KEYS_HINT_ZH}。"
    )


def call_answer_speech(outcome: str) -> str:
    """What the call says after the key (`inbound.call_keypress`'s outcome)."""
    if outcome.startswith("accepted:"):
        return "已为您接单，请尽快前往。到达后请回复短信2。"
    if outcome.startswith("declined:"):
        return "已记录您不能去，平台将通知下一位。"
    if outcome.startswith("already_taken:"):
        return "此警报已由他人接单，谢谢。"
    return "已收到，谢谢。"
