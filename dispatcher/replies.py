"""Parse an aide's SMS reply (CONTRACT.md §2 reply grammar). Pure: no I/O, never raises."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum


class ReplyKind(StrEnum):
    accept = "accept"
    decline = "decline"
    on_scene = "on_scene"
    done = "done"
    on_duty = "on_duty"
    off_duty = "off_duty"
    help = "help"
    visit = "visit"  # `访 E0012 [异常 …]`: a care visit made (issue 18)


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    alert_code: str | None = None
    outcome: str | None = None
    # A visit report: the elder's code as typed (upper-cased; None when missing), the words
    # after it, whether they report a concern (异常 …) and whether it is urgent (紧急).
    elder_code: str | None = None
    note: str | None = None
    concern: bool = False
    urgent: bool = False


# Whole-reply words. Matched exactly (after normalising) so that "不好" is not "好".
_WORDS: dict[str, ReplyKind] = {
    **dict.fromkeys(("1", "接", "接单", "收到", "好", "ok", "y"), ReplyKind.accept),
    **dict.fromkeys(("0", "不", "不能", "没空", "no", "n"), ReplyKind.decline),
    **dict.fromkeys(("2", "到", "到了", "已到", "到达"), ReplyKind.on_scene),
    **dict.fromkeys(("上班", "值班"), ReplyKind.on_duty),
    **dict.fromkeys(("下班", "休息"), ReplyKind.off_duty),
}

# ASCII digits only: `\d` would also match Arabic-Indic and other digits NFKC leaves alone.
# No letter may precede the "a", so a word such as "data27" is not read as a code.
_ALERT_CODE = re.compile(r"(?<![a-z])a([0-9]{1,9})(?![0-9])")
# "3" takes an outcome only when a non-digit follows, so "30" stays unknown rather than "3" + "0".
_DONE = re.compile(r"(?:(?:完成|结束)(?:了)?|3(?![0-9]))\s*(.*)", re.DOTALL)
# Punctuation people type around a reply; NFKC has already folded the full-width forms
# (！，？：；～) to ASCII, but 。 and 、 have no ASCII form.
_EDGE_PUNCTUATION = " \t\r\n。、.,!?;:~…'\"“”‘’()[]【】"


# A visit report starts with 访 (or 探访 / 走访), then the elder's code (letters, digits, - _),
# then an optional note. Read before the alert code, so an elder code "A12" is not an alert.
_VISIT = re.compile(
    r"(?:探访|走访|访)\s*([a-z0-9][a-z0-9_-]{0,31})?(.*)", re.DOTALL | re.IGNORECASE
)
# A note saying all is well is no concern, although "无异常" contains "异常".
_FINE_START = ("无异常", "没有异常", "一切正常", "正常", "良好")
_FINE = ("无事", "没事", "很好", "好", "ok")
_CONCERN = (
    "异常", "有事", "问题", "不好", "不适", "不舒服", "生病", "病", "摔", "跌", "伤", "住院",
    "急", "疼", "痛", "晕", "昏", "偏高", "偏低", "没吃", "断粮", "漏",
)  # fmt: skip
_URGENT = ("紧急", "急")


def _visit(text: str) -> Reply | None:
    match = _VISIT.fullmatch(text)
    if match is None:
        return None
    code, rest = match.group(1), _trim(match.group(2))
    if code is not None and not any(c.isdigit() for c in code):
        # "访问" or "访 abc": no code (an elder's code has a digit); the words are the note.
        rest, code = _trim(code + match.group(2)), None
    fine = rest.startswith(_FINE_START) or rest.lower() in _FINE
    concern = not fine and any(word in rest for word in _CONCERN)
    return Reply(
        kind=ReplyKind.visit,
        elder_code=code.upper() if code else None,
        note=rest or None,
        concern=concern,
        urgent=concern and any(word in rest for word in _URGENT),
    )


def _normalise(body: str) -> str:
    return unicodedata.normalize("NFKC", body).lower()


def _trim(text: str) -> str:
    return text.strip().strip(_EDGE_PUNCTUATION)


def parse_reply(body: str) -> Reply:
    """Read what an aide means. Anything not in the grammar is HELP (send the help SMS)."""
    visit = _visit(_trim(unicodedata.normalize("NFKC", body)))
    if visit is not None:
        return visit
    text = _normalise(body)
    alert_code: str | None = None
    code_match = _ALERT_CODE.search(text)
    if code_match:
        alert_code = "A" + code_match.group(1)
        text = text[: code_match.start()] + " " + text[code_match.end() :]
    command = _trim(text)

    kind = _WORDS.get(command)
    if kind is not None:
        return Reply(kind=kind, alert_code=alert_code)

    done = _DONE.fullmatch(command)
    if done:
        outcome = _trim(done.group(1))
        return Reply(kind=ReplyKind.done, alert_code=alert_code, outcome=outcome or None)

    return Reply(kind=ReplyKind.help, alert_code=alert_code)


# --- an SMS from an elder's or a guardian's number (issue 20 items 2 and 4) -------------------


class TextInKind(StrEnum):
    help = "help"  # a help word: raise a P1 for the elder (or join the open one)
    opt_out = "opt_out"  # 退订: no more SMS to this number
    opt_in = "opt_in"  # 订阅: SMS again
    message = "message"  # anything else: kept for the operator (a guardian's reply on the alert)


# The help words (CONTRACT §5; data, not code): one anywhere in the text raises the alert, so
# "快来救命啊" and "SOS!!" count. When in doubt, alert: "不用帮忙" raises one too, and a person
# closes it. Chinese words match inside the text; ASCII ones as a whole token ("120" in a
# phone number such as 13812012345, or "sos" in "sosa", is no help word).
HELP_WORDS: tuple[str, ...] = (
    "救命", "求助", "求救", "救救", "救我", "帮忙", "帮帮我", "快来", "急救", "报警",
    "sos", "120", "help",
)  # fmt: skip
OPT_OUT_WORDS: tuple[str, ...] = ("退订", "取消订阅", "td", "t", "unsubscribe", "stop")
OPT_IN_WORDS: tuple[str, ...] = ("订阅", "恢复订阅", "恢复", "start")


def _has_word(text: str, word: str) -> bool:
    if not word.isascii():
        return word in text
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", text) is not None


def parse_text_in(body: str) -> TextInKind:
    """What an elder's or a guardian's SMS means (pure, never raises). 退订 / 订阅 only as the
    whole text (so "我不退订，救命" is help); a help word anywhere."""
    text = _trim(_normalise(body))
    if text in OPT_OUT_WORDS:
        return TextInKind.opt_out
    if text in OPT_IN_WORDS:
        return TextInKind.opt_in
    if any(_has_word(text, word) for word in HELP_WORDS):
        return TextInKind.help
    return TextInKind.message
