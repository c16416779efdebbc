"""The reply grammar's visit report (issue 18): `访 E0012`, `访 E0012 异常 摔过一次`, as an aide
types it on a basic phone; fuzzed as the rest of the grammar is (tests/dispatcher/test_replies.py)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.replies import Reply, ReplyKind, parse_reply

VISIT = ReplyKind.visit


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("访 E0012", Reply(VISIT, elder_code="E0012")),
        ("访E0012", Reply(VISIT, elder_code="E0012")),
        ("访 e0012", Reply(VISIT, elder_code="E0012")),
        ("访 Ｅ００１２", Reply(VISIT, elder_code="E0012")),  # full-width, as some phones type
        ("  探访 E0012。", Reply(VISIT, elder_code="E0012")),
        ("走访 E0012", Reply(VISIT, elder_code="E0012")),
        ("访 A12", Reply(VISIT, elder_code="A12")),  # an elder code, not alert A12
        ("访 E0012 正常", Reply(VISIT, elder_code="E0012", note="正常")),
        ("访 E0012 无异常", Reply(VISIT, elder_code="E0012", note="无异常")),
        ("访 E0012 好", Reply(VISIT, elder_code="E0012", note="好")),
        (
            "访 E0012 异常 摔过一次",
            Reply(VISIT, elder_code="E0012", note="异常 摔过一次", concern=True),
        ),
        (
            "访E0012异常摔过一次",
            Reply(VISIT, elder_code="E0012", note="异常摔过一次", concern=True),
        ),
        ("访 E0012，血压偏高", Reply(VISIT, elder_code="E0012", note="血压偏高", concern=True)),
        ("访 E0012 好像摔了", Reply(VISIT, elder_code="E0012", note="好像摔了", concern=True)),
        (
            "访 E0012 紧急 叫不醒",
            Reply(VISIT, elder_code="E0012", note="紧急 叫不醒", concern=True, urgent=True),
        ),
        ("访", Reply(VISIT)),
        ("访 老王", Reply(VISIT, note="老王")),  # no code: the aide is told the format
        ("访问", Reply(VISIT, note="问")),
    ],
)
def test_visit_forms(body: str, expected: Reply) -> None:
    assert parse_reply(body) == expected


@pytest.mark.parametrize("body", ["1", "接单", "3 送医", "下班", "1 A27", "不访", "回访"])
def test_other_replies_are_not_visits(body: str) -> None:
    assert parse_reply(body).kind is not VISIT


CODES = st.from_regex(r"[A-Za-z]{0,3}[0-9]{1,6}[A-Za-z0-9_-]{0,4}", fullmatch=True)
NOTES = st.text(max_size=40)
CONCERN_WORDS = st.sampled_from(["异常", "摔", "病", "住院", "不舒服", "疼"])


@given(CODES, NOTES)
def test_any_code_then_anything_is_that_elders_visit(code: str, note: str) -> None:
    reply = parse_reply(f"访 {code} {note}")
    assert reply.kind is VISIT
    assert reply.elder_code == unicodedata.normalize("NFKC", code).upper()
    assert reply.urgent <= reply.concern
    assert reply.concern <= (reply.note is not None)


@given(CODES, CONCERN_WORDS, NOTES)
def test_a_concern_word_is_a_concern(code: str, word: str, rest: str) -> None:
    reply = parse_reply(f"访 {code} {word}{rest}")
    assert reply.kind is VISIT and reply.concern and reply.note


@given(st.text().filter(lambda t: "访" not in unicodedata.normalize("NFKC", t)))
def test_nothing_without_访_is_a_visit(body: str) -> None:
    reply = parse_reply(body)
    assert reply.kind is not VISIT and reply.elder_code is None and not reply.concern


@given(st.text(alphabet=st.one_of(st.characters(), st.characters(categories=["Cs"]))))
def test_never_raises_on_a_visit_with_any_text(body: str) -> None:
    assert parse_reply("访 " + body).kind in set(ReplyKind)
    assert parse_reply("访" + body).kind in set(ReplyKind)
