"""The parser is total: no input from the wire, however broken, makes it raise."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from anxin.schemas import MAX_EVENT_BYTES, EventType
from gateway import ingest

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.text(max_size=70), json_values),
        "type": st.one_of(st.sampled_from([t.value for t in EventType]), json_values),
        "ts": json_values,
        "data": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=MAX_EVENT_BYTES + 64))
def test_parse_event_never_raises_on_bytes(payload: bytes) -> None:
    result = ingest.parse_event(payload)
    assert isinstance(result, ingest.ParsedEvent | ingest.Rejection)


@settings(max_examples=400, deadline=None)
@given(event_like)
def test_parse_event_on_json_objects_accepts_exactly_sound_identity_and_type(
    body: dict[str, object],
) -> None:
    result = ingest.parse_event(json.dumps(body).encode())
    event_id, type_ = body.get("event_id"), body.get("type")
    sound = (
        isinstance(event_id, str)
        and 1 <= len(event_id) <= 64
        # NUL and lone surrogates cannot be stored as the key (Postgres text): rejected.
        and ingest._storable(event_id) == event_id
        and isinstance(type_, str)
        and type_ in set(EventType)
    )
    if len(json.dumps(body).encode()) > MAX_EVENT_BYTES:
        assert isinstance(result, ingest.Rejection)
    elif sound:
        # "When in doubt, alert": damaged ts/data never make a sound event a rejection.
        assert isinstance(result, ingest.ParsedEvent)
        assert isinstance(result.data, dict)
    else:
        assert isinstance(result, ingest.Rejection)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_heartbeat_never_raises(payload: bytes) -> None:
    beat = ingest.parse_heartbeat(payload)
    assert beat.battery is None or 0 <= beat.battery <= 100


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_topic_never_raises_and_only_yields_valid_ids(topic: str) -> None:
    parts = ingest.parse_topic(topic)
    if parts is not None:
        assert topic == f"anxin/v1/dev/{parts.device_id}/{parts.leaf}"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000), st.integers(min_value=0, max_value=4096))
def test_truncate_payload_never_raises_and_fits_the_column(payload: bytes, limit: int) -> None:
    text = ingest.truncate_payload(payload, limit)
    assert "\x00" not in text and len(text) <= max(limit, 0)


def _read(reader: object, text: str) -> str:
    """What a JSON reader makes of `text`, comparable (NaN included): its repr, or 'refused'."""
    try:
        return repr(reader(text))  # type: ignore[operator]
    except (ValueError, RecursionError):
        return "refused"


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
        json_values.map(json.dumps),
        st.text(alphabet='{}[]",:0123456789.eE+-nulltruefalseNaInfity \\u', max_size=40),
        st.integers().map(str),
    )
)
def test_payload_json_reads_exactly_as_the_standard_library(text: str) -> None:
    # orjson does the reading where it agrees with json.loads; the rest is json.loads's.
    assert _read(ingest._loads, text) == _read(json.loads, text)
