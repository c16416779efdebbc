"""The reply grammar of CONTRACT.md §2, as an aide would type it on a basic phone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.replies import Reply, ReplyKind, parse_reply

ACCEPT, DECLINE, ON_SCENE = ReplyKind.accept, ReplyKind.decline, ReplyKind.on_scene
DONE, ON_DUTY, OFF_DUTY, HELP = (
    ReplyKind.done,
    ReplyKind.on_duty,
    ReplyKind.off_duty,
    ReplyKind.help,
)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        # Every form in the contract table.
        *[(word, ACCEPT) for word in ("1", "接", "接单", "收到", "好", "ok", "y")],
        *[(word, DECLINE) for word in ("0", "不", "不能", "没空", "no", "n")],
        *[(word, ON_SCENE) for word in ("2", "到", "到了", "已到", "到达")],
        *[(word, DONE) for word in ("3", "完成", "结束")],
        *[(word, ON_DUTY) for word in ("上班", "值班")],
        *[(word, OFF_DUTY) for word in ("下班", "休息")],
        # How people actually type them.
        ("１", ACCEPT),
        ("２", ON_SCENE),
        ("３", DONE),
        ("０", DECLINE),
        ("  1  ", ACCEPT),
        ("\t接单\n", ACCEPT),
        ("OK", ACCEPT),
        ("Ok!", ACCEPT),
        ("ＯＫ", ACCEPT),
        ("Y", ACCEPT),
        ("NO.", DECLINE),
        ("收到。", ACCEPT),
        ("好！", ACCEPT),
        ("到了，", ON_SCENE),
        ("完成了", DONE),
        ("下班。", OFF_DUTY),
    ],
)
def test_contract_forms(body: str, kind: ReplyKind) -> None:
    assert parse_reply(body) == Reply(kind=kind)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("1 A27", Reply(ACCEPT, "A27")),
        ("A27 1", Reply(ACCEPT, "A27")),
        ("a27接", Reply(ACCEPT, "A27")),
        ("1a27", Reply(ACCEPT, "A27")),
        ("Ａ２７ ０", Reply(DECLINE, "A27")),
        ("2 a103。", Reply(ON_SCENE, "A103")),
        ("A27，到了", Reply(ON_SCENE, "A27")),
        ("3 A27 误报", Reply(DONE, "A27", "误报")),
    ],
)
def test_alert_code_before_or_after_the_word(body: str, expected: Reply) -> None:
    assert parse_reply(body) == expected


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ("3 误报", "误报"),
        ("3误报", "误报"),
        ("完成 送医", "送医"),
        ("完成送医。", "送医"),
        ("结束 已处理", "已处理"),
        ("完成了，已处理", "已处理"),
        ("A27 3 送医", "送医"),
        ("３ 误报", "误报"),
        ("3", None),
        ("完成！", None),
    ],
)
def test_done_keeps_the_outcome_word(body: str, outcome: str | None) -> None:
    reply = parse_reply(body)
    assert reply.kind is DONE
    assert reply.outcome == outcome


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   ",
        "?",
        "你好",
        "不好",
        "好的呀",
        "12",
        "30",
        "A27",
        "yes please",
        "4",
        "到底怎么办",
        "a",
    ],
)
def test_anything_else_gets_the_help_sms(body: str) -> None:
    assert parse_reply(body).kind is HELP


def test_help_still_remembers_the_alert_code() -> None:
    assert parse_reply("A27 怎么回事") == Reply(HELP, "A27")


@given(st.text())
def test_never_raises_on_any_text(body: str) -> None:
    reply = parse_reply(body)
    assert isinstance(reply.kind, ReplyKind)


# Carrier gateways occasionally pass broken UTF-16 through; a lone surrogate is still a str.
@given(st.text(alphabet=st.one_of(st.characters(), st.characters(categories=["Cs"]))))
def test_never_raises_even_on_lone_surrogates(body: str) -> None:
    assert isinstance(parse_reply(body).kind, ReplyKind)
