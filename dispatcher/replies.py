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


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    alert_code: str | None = None
    outcome: str | None = None


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


def _normalise(body: str) -> str:
    return unicodedata.normalize("NFKC", body).lower()


def _trim(text: str) -> str:
    return text.strip().strip(_EDGE_PUNCTUATION)


def parse_reply(body: str) -> Reply:
    """Read what an aide means. Anything not in the grammar is HELP (send the help SMS)."""
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
