"""Every SMS the platform writes is a registered Aliyun template with fitting variables (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher import aliyun_templates, templates
from dispatcher.aliyun_templates import (
    MAX_VARIABLE_CHARS,
    TEMPLATES,
    VOICE_TEMPLATES,
    NoTemplate,
    fit_variable,
    to_template,
    to_voice_template,
    variable_problem,
)
from dispatcher.provider_errors import (
    ALIYUN_OUTCOMES,
    RETRYABLE,
    TWILIO_OUTCOMES,
    Outcome,
    classify_aliyun,
)
from dispatcher.twilio_provider import TWILIO_ERRORS
from visits import replies as visit_replies
from visits.models import RejectReason


def every_sms(lang: str, name: str = "王秀英", address: str = "三组12号") -> list[str]:
    call_out = {
        "alert_code": "A27",
        "elder_name": name,
        "village": "石门村",
        "address": address,
        "kind": "fall",
        "distance_km": 12.4,
        "eta_minutes": 18.2,
        "lang": lang,
    }
    return [
        templates.dispatch_sms(**call_out),  # type: ignore[arg-type]
        templates.centre_sms(**call_out),  # type: ignore[arg-type]
        templates.handled_by_sms("A27", "李四", lang),
        templates.not_taker_sms("A27", "欧阳娜娜", lang),
        templates.reassigned_sms("A27", lang),
        templates.help_sms(lang),
        templates.pressed_again_sms("A27", name, 3, lang),
        templates.reminder_sms("A27", lang),
        templates.guardian_sms(name, "sos", lang),
        templates.duty_sms(True, lang),
        templates.duty_sms(False, lang),
    ]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_sms_is_a_registered_template_that_renders_the_same_text(lang: str) -> None:
    used = set()
    for body in every_sms(lang):
        message = to_template(body)
        assert aliyun_templates.strip_signature(body) == message.text
        assert message.shortened == ()
        used.add(message.template.key)
    suffix = "_EN" if lang == "en" else ""
    alerts = [t for t in TEMPLATES if t.purpose not in ("visit", "family")]
    assert {t.key for t in alerts if t.key.endswith("_EN") == bool(suffix)} == used


@pytest.mark.parametrize("english", [False, True])
def test_every_refused_visit_report_answer_is_a_registered_template(english: bool) -> None:
    sign = templates.SIGNATURE_EN if english else templates.SIGNATURE_ZH
    answers = [visit_replies.FORMAT_EN if english else visit_replies.FORMAT_ZH]
    table = visit_replies.REJECTED_EN if english else visit_replies.REJECTED_ZH
    followed = " Concern passed on as A27." if english else "异常已转值班员跟进(A27)。"
    for reason, text in table.items():
        answers.append(text.format(code="E0012"))
        # A concern opens an alert for an elder on the registry, counted or not.
        if reason not in (RejectReason.unknown_elder, RejectReason.archived):
            answers.append(text.format(code="E0012") + followed)
    for answer in answers:
        message = to_template(sign + answer)
        assert message.text == answer and message.template.purpose == "visit"


def test_every_sms_to_the_family_is_a_registered_template() -> None:
    """Guardians' SMS (issue 20): the text-in answers, the all clear with every outcome, 退订."""
    bodies = [
        templates.text_alert_sms(joined=False),
        templates.text_alert_sms(joined=True),
        *(templates.all_clear_sms("欧阳秀英", "fall", o) for o in templates.ALL_CLEAR_OUTCOMES_ZH),
        templates.all_clear_sms("王秀英", "sos", "unknown-outcome"),
        templates.family_opt_sms(True),
        templates.family_opt_sms(False),
    ]
    used = set()
    for body in bodies:
        message = to_template(body)
        assert aliyun_templates.strip_signature(body) == message.text
        assert message.shortened == ()
        used.add(message.template.key)
    assert used == {t.key for t in aliyun_templates.FAMILY_TEMPLATES}


def test_the_centre_call_out_is_not_read_as_the_aides() -> None:
    body = templates.centre_sms(
        alert_code="A27",
        elder_name="王秀英",
        village="石门村",
        address="三组",
        kind="sos",
        distance_km=1.0,
        eta_minutes=3,
    )
    assert to_template(body).template.key == "ANXIN_CALLOUT_CENTRE"


def test_free_text_has_no_template() -> None:
    with pytest.raises(NoTemplate):
        to_template("【安心】今晚停电，请注意安全")


@given(st.text(min_size=0, max_size=120))
def test_a_fitted_variable_passes_aliyuns_rules(value: str) -> None:
    fitted = fit_variable(value)
    assert variable_problem(fitted) is None
    assert len(fitted) <= MAX_VARIABLE_CHARS


def test_long_values_keep_their_start_and_links_are_cut_out() -> None:
    village = "石门村" + "王家湾后山坡" * 8
    assert fit_variable(village) == village[:34] + "…"
    assert variable_problem("详见 https://t.cn/abc") == "link"
    assert fit_variable("详见 https://t.cn/abc 三组") == "详见 三组"
    assert fit_variable("") == "-"


def test_the_docs_list_every_template_for_the_operator() -> None:
    with open("docs/operations.md", encoding="utf-8") as handle:
        docs = handle.read()
    for template in (*TEMPLATES, *VOICE_TEMPLATES):
        assert f"`{template.key}`" in docs and template.text in docs, template.key


def test_provider_errors_map_to_the_platforms_outcomes() -> None:
    assert classify_aliyun("isv.BUSINESS_LIMIT_CONTROL").outcome == Outcome.limit_reached
    assert classify_aliyun("isv.MOBILE_NUMBER_ILLEGAL").outcome == Outcome.invalid_number
    assert classify_aliyun("isv.TEMPLATE_MISSING_PARAMETERS").outcome == Outcome.blocked_content
    assert classify_aliyun("isv.AMOUNT_NOT_ENOUGH").outcome == Outcome.account
    assert classify_aliyun("isp.SYSTEM_ERROR").retryable
    assert classify_aliyun(None, 503).retryable and not classify_aliyun("isv.NEW_CODE").retryable
    assert all(
        (outcome in RETRYABLE) == classify_aliyun(code).retryable
        for code, outcome in ALIYUN_OUTCOMES.items()
    )
    # Twilio's codes answer the same question the same way: retry only when the provider is down.
    assert set(TWILIO_OUTCOMES) == set(TWILIO_ERRORS)
    for code, info in TWILIO_ERRORS.items():
        assert info.retryable == (TWILIO_OUTCOMES[code] in RETRYABLE), code


@pytest.mark.parametrize("village", ["石门村", ""])
@pytest.mark.parametrize("escalated", [False, True])
@pytest.mark.parametrize("kind", ["sos", "bed_exit", "unknown-kind"])
def test_every_call_out_speech_is_a_registered_tts_template(
    village: str, escalated: bool, kind: str
) -> None:
    speech = templates.call_speech(
        elder_name="欧阳娜娜",
        village=village,
        kind=kind,
        distance_km=2.46,
        eta_minutes=5.1,
        escalated=escalated,
    )
    message = to_voice_template(speech)
    assert message.text == speech and message.shortened == ()
    assert message.template.key == (
        "ANXIN_TTS_CALLOUT_CENTRE" if escalated else "ANXIN_TTS_CALLOUT"
    )
    assert message.params["kind"] == templates.kind_label(kind)
