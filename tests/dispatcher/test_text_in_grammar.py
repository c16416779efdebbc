"""What an SMS from an elder's family means (issue 20 items 2, 4): the help words, 退订 / 订阅
and everything else (pure; fuzzed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.replies import HELP_WORDS, OPT_IN_WORDS, OPT_OUT_WORDS, TextInKind, parse_text_in


@pytest.mark.parametrize(
    "body",
    ["救命", "救命！", "快来救命啊", "求助", "妈妈摔倒了，帮忙", "SOS", "sos!!", " ＳＯＳ ",
     "120", "打１２０", "Help me", "帮帮我", "救我", "我爸不行了快来", "急救"],
)  # fmt: skip
def test_a_help_word_anywhere_is_help(body: str) -> None:
    assert parse_text_in(body) == TextInKind.help


@pytest.mark.parametrize(
    "body",
    ["我去", "1", "好的", "谢谢", "我马上到", "13812012345", "sosa", "1200元", "helpful", "",
     "   ", "。", "退订了吗"],
)  # fmt: skip
def test_anything_else_is_a_message(body: str) -> None:
    assert parse_text_in(body) == TextInKind.message


@pytest.mark.parametrize("body", ["退订", " 退订。", "TD", "td", "T", "取消订阅", "STOP"])
def test_opting_out_is_the_whole_text(body: str) -> None:
    assert parse_text_in(body) == TextInKind.opt_out


@pytest.mark.parametrize("body", ["订阅", "恢复订阅", "订阅！"])
def test_opting_back_in(body: str) -> None:
    assert parse_text_in(body) == TextInKind.opt_in


def test_a_help_word_beside_an_opt_out_word_is_help() -> None:
    """When in doubt, alert: 退订 counts only as the whole text."""
    assert parse_text_in("我不退订，救命") == TextInKind.help


noise = st.text(max_size=40)


@given(noise, st.sampled_from([w for w in HELP_WORDS if not w.isascii()]), noise)
def test_a_chinese_help_word_inside_any_text_is_help(before: str, word: str, after: str) -> None:
    assert parse_text_in(before + word + after) == TextInKind.help


@given(
    st.sampled_from([w for w in HELP_WORDS if w.isascii()]), st.sampled_from([" ", "，", "!", "。"])
)
def test_an_ascii_help_word_as_a_token_is_help(word: str, edge: str) -> None:
    assert parse_text_in(f"我{edge}{word.upper()}{edge}") == TextInKind.help


@given(st.text(max_size=200))
def test_any_text_is_read_without_raising(body: str) -> None:
    assert parse_text_in(body) in set(TextInKind)


@given(st.text(alphabet="0123456789", min_size=4, max_size=13))
def test_digits_with_120_inside_a_number_are_not_help(digits: str) -> None:
    body = "9" + digits + "9"  # e.g. a phone number someone texts: never a lone 120
    assert parse_text_in(body) == TextInKind.message


def test_the_words_are_data() -> None:
    assert {"救命", "求助", "帮忙", "sos", "120"} <= set(HELP_WORDS)
    assert "退订" in OPT_OUT_WORDS and "订阅" in OPT_IN_WORDS
