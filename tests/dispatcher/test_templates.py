"""What the aide, the duty phone and the family read on their phones."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.templates import (
    KIND_LABELS_EN,
    KIND_LABELS_ZH,
    centre_sms,
    dispatch_sms,
    duty_sms,
    guardian_sms,
    handled_by_sms,
    help_sms,
    mask_name,
    pressed_again_sms,
    reminder_sms,
    sms_segments,
)

TYPICAL: dict[str, Any] = {
    "alert_code": "A27",
    "elder_name": "王秀英",
    "village": "李家村",
    "address": "3组12号",
    "kind": "sos",
    "distance_km": 1.24,
    "eta_minutes": 7.2,
}


def test_dispatch_says_who_where_how_far_what_and_how_to_reply() -> None:
    text = dispatch_sms(**TYPICAL)
    for part in ("王秀英", "李家村3组12号", "1.2公里", "8分钟", "一键呼叫", "A27"):
        assert part in text
    assert "回1接单 0不能去 2到达 3完成" in text


def test_dispatch_in_english_on_request() -> None:
    text = dispatch_sms(**{**TYPICAL, "elder_name": "Wang Xiuying", "village": "Lijia"}, lang="en")
    for part in ("Wang Xiuying", "Lijia", "1.2 km", "~8 min", "SOS button", "A27", "Reply 1"):
        assert part in text


@pytest.mark.parametrize("kind", sorted(KIND_LABELS_ZH))
def test_typical_dispatch_fits_one_sms_segment_for_every_kind(kind: str) -> None:
    text = dispatch_sms(**{**TYPICAL, "kind": kind, "alert_code": "A12345", "eta_minutes": 58})
    assert KIND_LABELS_ZH[kind] in text
    assert len(text) <= 70
    assert sms_segments(text) == 1


def test_long_address_is_shortened_to_stay_in_one_segment() -> None:
    address = "东头老槐树往北第三户门口有石狮子的院子再往里走到底"
    for send in (dispatch_sms, centre_sms):
        text = send(**{**TYPICAL, "elder_name": "欧阳秀英", "address": address})
        assert sms_segments(text) == 1
        assert "李家村东头老槐树" in text
        assert "…" in text


def test_address_that_already_names_the_village_is_not_repeated() -> None:
    text = dispatch_sms(**{**TYPICAL, "address": "李家村3组12号"})
    assert "李家村李家村" not in text
    assert "李家村3组12号" in text


def test_centre_call_out_says_it_is_an_escalation() -> None:
    assert "升级" in centre_sms(**TYPICAL)
    assert "升级" not in dispatch_sms(**TYPICAL)
    assert "ESCALATED" in centre_sms(**TYPICAL, lang="en")


def test_eta_rounds_up_and_is_never_zero() -> None:
    assert "约1分钟" in dispatch_sms(**{**TYPICAL, "eta_minutes": 0.2})
    assert "约8分钟" in dispatch_sms(**{**TYPICAL, "eta_minutes": 7.01})
    assert "约7分钟" in dispatch_sms(**{**TYPICAL, "eta_minutes": 7.0})


def test_unknown_kind_still_reads_as_a_call_for_help() -> None:
    assert "求助" in dispatch_sms(**{**TYPICAL, "kind": "something_new"})


@pytest.mark.parametrize(
    ("name", "masked"),
    [("王小明", "王XX"), ("王明", "王XX"), ("欧阳娜娜", "欧阳XX"), ("Li Lei", "Li XX"), ("", "XX")],
)
def test_taker_given_name_is_masked(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_handled_by_tells_others_to_stand_down_without_the_full_name() -> None:
    text = handled_by_sms("A27", "王小明")
    assert text == "【安心】A27 已由王XX接单，无需前往。"
    assert "小明" not in text
    assert "Wang XX" in handled_by_sms("A27", "Wang Xiaoming", lang="en")


def test_help_lists_every_reply() -> None:
    for lang in ("zh", "en"):
        text = help_sms(lang)
        for reply in ("1", "0", "2", "3", "上班", "下班", "A27"):
            assert reply in text
    assert sms_segments(help_sms()) == 1


def test_pressed_again_counts_presses() -> None:
    text = pressed_again_sms("A27", "王秀英", 3)
    assert "A27" in text and "王秀英" in text and "3次" in text
    assert "3 times" in pressed_again_sms("A27", "Wang", 3, lang="en")


def test_reminder_asks_for_arrival_or_decline() -> None:
    assert "回2" in reminder_sms("A27") and "回0" in reminder_sms("A27")
    assert "Reply 2" in reminder_sms("A27", lang="en")


def test_guardian_message_is_informational() -> None:
    text = guardian_sms("王秀英", "fall")
    assert "王秀英" in text and "跌倒" in text and "已通知" in text
    assert "fall" in guardian_sms("Wang", "fall", lang="en")


def test_duty_confirmation_says_how_to_undo() -> None:
    assert "值班" in duty_sms(True) and "下班" in duty_sms(True)
    assert "上班" in duty_sms(False)
    assert "on duty" in duty_sms(True, lang="en")
    assert "off duty" in duty_sms(False, lang="en")


@pytest.mark.parametrize(
    "text",
    [
        handled_by_sms("A27", "王小明"),
        pressed_again_sms("A27", "王秀英", 12),
        reminder_sms("A27"),
        guardian_sms("欧阳秀英", "bed_exit"),
        duty_sms(True),
        duty_sms(False),
    ],
)
def test_short_messages_fit_one_segment(text: str) -> None:
    assert sms_segments(text) == 1


def test_every_chinese_label_has_an_english_one() -> None:
    assert set(KIND_LABELS_ZH) == set(KIND_LABELS_EN)


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("中" * 70, 1),
        ("中" * 71, 2),
        ("中" * 134, 2),
        ("{" * 81, 2),
    ],
)
def test_segment_count_follows_gsm7_and_ucs2(text: str, segments: int) -> None:
    assert sms_segments(text) == segments
